/* Serial console and exit paths shared by the payloads. */
#include "lib.h"

#define COM1 0x3f8
#define COM1_LSR (COM1 + 5)
#define LSR_THRE 0x20

static int serial_ready;

/* Program the UART like a real driver would: 8N1, divisor 1 (115200 baud). */
static void serial_init(void)
{
	outb(COM1 + 1, 0x00);	/* IER: no interrupts */
	outb(COM1 + 3, 0x80);	/* LCR: DLAB on */
	outb(COM1 + 0, 0x01);	/* DLL */
	outb(COM1 + 1, 0x00);	/* DLM */
	outb(COM1 + 3, 0x03);	/* LCR: 8N1, DLAB off */
	serial_ready = 1;
}

static void serial_put(u8 c)
{
	/* Wait for THRE, but bounded: a VMM with a broken LSR should not hang us. */
	for (u32 i = 0; i < (1u << 20) && !(inb(COM1_LSR) & LSR_THRE); i++)
		;
	outb(COM1, c);
}

void print_char(char c)
{
	if (!serial_ready)
		serial_init();
	if (c == '\n')
		serial_put('\r');
	serial_put(c);
}

void print(const char *s)
{
	while (*s)
		print_char(*s++);
}

void print_hex(u64 v)
{
	int shift = 60;

	print("0x");
	while (shift > 0 && !((v >> shift) & 0xf))
		shift -= 4;
	for (; shift >= 0; shift -= 4)
		print_char("0123456789abcdef"[(v >> shift) & 0xf]);
}

void print_dec(u32 v)
{
	char buf[11];
	int i = 0;

	do {
		buf[i++] = '0' + v % 10;
		v /= 10;
	} while (v);
	while (i)
		print_char(buf[--i]);
}

void print_dec2(u32 v)
{
	print_char('0' + v / 10 % 10);
	print_char('0' + v % 10);
}

static inline u64 rdtsc(void)
{
	u32 lo, hi;
	__asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
	return ((u64)hi << 32) | lo;
}

/*
 * Give a VMM that handles the exit request asynchronously time to stop us
 * (~2^30 TSC ticks, well under a second), so "FAILED" really means ignored.
 */
static void grace_period(void)
{
	u64 start = rdtsc();

	for (u32 i = 0; i < (1u << 30) && rdtsc() - start < (1ull << 30); i++)
		__asm__ volatile("pause");
}

void halt(void)
{
	for (;;)
		__asm__ volatile("cli; hlt");
}

void reset_i8042(void)
{
	outb(0x64, 0xfe);	/* i8042 command 0xFE: pulse the CPU reset line */
	grace_period();
	print("reset FAILED: still running\n");
	halt();
}

void poweroff_acpi(void)
{
	/* PM1a_CNT: SLP_TYP = 5 (the \_S5 value in Vireo's DSDT) | SLP_EN. */
	outw(0x604, (5 << 10) | (1 << 13));
	grace_period();
	print("poweroff FAILED: still running\n");
	halt();
}

/* GCC may emit calls to these even in freestanding code. */
void *memset(void *d, int c, unsigned int n)
{
	u8 *p = d;

	while (n--)
		*p++ = (u8)c;
	return d;
}

void *memcpy(void *d, const void *s, unsigned int n)
{
	u8 *p = d;
	const u8 *q = s;

	while (n--)
		*p++ = *q++;
	return d;
}
