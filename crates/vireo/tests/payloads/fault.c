/*
 * fault: #UD with an empty IDT. Delivering #UD fails (#GP), delivering that
 * fails (#DF), and that fails too: a triple fault, i.e. a shutdown exit. The
 * VMM must turn that into an error exit instead of hanging or rebooting.
 */
#include "lib.h"

void pvh_main(const struct hvm_start_info *si)
{
	/* The PVH ABI leaves IDTR unspecified: load a zero-limit IDT ourselves. */
	static const struct { u16 limit; u32 base; } __attribute__((packed)) no_idt = { 0, 0 };

	(void)si;
	print("vireo-pvh: fault\n");
	__asm__ volatile("lidt %0; ud2" : : "m"(no_idt));
	print("fault FAILED: survived ud2\n");
	halt();
}
