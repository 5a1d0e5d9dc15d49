/*
 * cpuid: print the parts of the CPUID policy a guest kernel relies on: the
 * hypervisor leaf 0x40000000 signature and the logical processor count in
 * leaf 1 EBX[23:16].
 */
#include "lib.h"

static void cpuid(u32 leaf, u32 r[4])
{
	__asm__ volatile("cpuid" : "=a"(r[0]), "=b"(r[1]), "=c"(r[2]), "=d"(r[3]) : "a"(leaf), "c"(0));
}

/* Print 12 signature bytes quoted, NULs as \0, so "KVMKVMKVM\0\0\0" is visible. */
static void print_sig(u32 a, u32 b, u32 c)
{
	u32 w[3] = { a, b, c };

	print_char('"');
	for (int i = 0; i < 12; i++) {
		u8 ch = (u8)(w[i / 4] >> (8 * (i % 4)));

		if (ch == 0) {
			print("\\0");
		} else if (ch < 0x20 || ch > 0x7e || ch == '"' || ch == '\\') {
			print("\\x");
			print_char("0123456789abcdef"[ch >> 4]);
			print_char("0123456789abcdef"[ch & 0xf]);
		} else {
			print_char(ch);
		}
	}
	print_char('"');
}

void pvh_main(const struct hvm_start_info *si)
{
	u32 r[4];

	(void)si;
	print("vireo-pvh: cpuid\n");

	cpuid(0, r);
	print("cpuid vendor ");
	print_sig(r[1], r[3], r[2]);	/* EBX, EDX, ECX */
	print(" max-leaf ");
	print_hex(r[0]);
	print_char('\n');

	cpuid(1, r);
	print("cpuid leaf1 logical ");
	print_dec((r[1] >> 16) & 0xff);
	print(" apicid ");
	print_dec(r[1] >> 24);
	print(" htt ");
	print_dec((r[3] >> 28) & 1);
	print(" hypervisor ");
	print_dec(r[2] >> 31);
	print_char('\n');

	cpuid(0x40000000, r);
	print("cpuid hv-vendor ");
	print_sig(r[1], r[2], r[3]);	/* EBX, ECX, EDX */
	print(" max-leaf ");
	print_hex(r[0]);
	print_char('\n');

	reset_i8042();
}
