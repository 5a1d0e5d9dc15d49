/*
 * PVH entry stub shared by all payloads.
 *
 * The PVH ABI enters here in 32-bit protected mode with paging off, flat
 * CS/DS/ES/SS, interrupts off and EBX = physical address of the
 * struct hvm_start_info. Nothing else is defined (ESP in particular), so
 * set up our own stack before calling pvh_main(start_info).
 */
	.code32
	.section .text.entry, "ax"
	.globl	_start
_start:
	cli
	cld
	/* Zero .bss ourselves instead of trusting the loader to honour p_memsz. */
	mov	$__bss_start, %edi
	mov	$__bss_end, %ecx
	sub	%edi, %ecx
	xor	%eax, %eax
	rep stosb
	mov	$stack_top, %esp
	push	%ebx
	call	pvh_main
	/* pvh_main() does not return (it resets or powers off); stop if it does. */
1:	cli
	hlt
	jmp	1b

	.section .bss
	.balign	16
	.skip	16384
stack_top:

/*
 * ELF note "Xen", type XEN_ELFNOTE_PHYS32_ENTRY (18): the 32-bit physical
 * entry point. This is how a PVH kernel advertises itself (see Linux
 * arch/x86/platform/pvh/head.S).
 */
	.section .note.Xen, "a", @note
	.balign	4
	.long	2f - 1f		/* namesz */
	.long	4f - 3f		/* descsz */
	.long	18		/* type */
1:	.asciz	"Xen"
2:	.balign	4
3:	.long	_start
#ifdef PVH_NOTE_DESC8
	/* ELF64 images carry an 8-byte desc, as Linux does (_ASM_PTR); QEMU
	 * reads 8 bytes from a 64-bit ELF's note. */
	.long	0
#endif
4:	.balign	4

	/* No executable stack (silences ld's warning for assembly objects). */
	.section .note.GNU-stack, "", @progbits
