/* rtc: read the CMOS real-time clock and print "rtc CCYY-MM-DD HH:MM:SS". */
#include "lib.h"

static u8 cmos_read(u8 reg)
{
	outb(0x70, reg);	/* bit 7 clear: leave NMIs enabled */
	return inb(0x71);
}

/* Registers 0,2,4,7,8,9 and 0x32 (century); register B bit 2 says binary vs BCD. */
static const u8 regs[7] = { 0x32, 0x09, 0x08, 0x07, 0x04, 0x02, 0x00 };

static void read_clock(u8 v[7])
{
	/* Wait out an update in progress (register A bit 7), bounded. */
	for (u32 i = 0; i < 1000000 && (cmos_read(0x0a) & 0x80); i++)
		;
	for (int i = 0; i < 7; i++)
		v[i] = cmos_read(regs[i]);
}

void pvh_main(const struct hvm_start_info *si)
{
	u8 a[7], b[7], status_b;
	int same, tries = 0;

	(void)si;
	print("vireo-pvh: rtc\n");

	/* Read until two consecutive reads agree, so we never mix two seconds. */
	read_clock(a);
	do {
		for (int i = 0; i < 7; i++)
			b[i] = a[i];
		read_clock(a);
		same = 1;
		for (int i = 0; i < 7; i++)
			same &= a[i] == b[i];
	} while (!same && ++tries < 10);

	status_b = cmos_read(0x0b);
	print("cmos status-b ");
	print_hex(status_b);
	print_char('\n');

	print("rtc ");
	for (int i = 0; i < 7; i++) {
		u32 v = a[i];

		if (!(status_b & 0x04))		/* BCD (the default) */
			v = (v >> 4) * 10 + (v & 0xf);
		print_dec2(v);
		print(i == 0 ? "" : i < 3 ? "-" : i == 3 ? " " : i < 6 ? ":" : "\n");
	}
	reset_i8042();
}
