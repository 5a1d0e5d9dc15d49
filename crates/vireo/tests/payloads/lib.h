/* Tiny freestanding support library for the PVH test payloads. */
#ifndef PAYLOAD_LIB_H
#define PAYLOAD_LIB_H

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;

/* The PVH start info (xen/include/public/arch-x86/hvm/start_info.h). */
#define HVM_START_MAGIC 0x336ec578
struct hvm_start_info {
	u32 magic;
	u32 version;		/* memmap_* fields exist from version 1 */
	u32 flags;
	u32 nr_modules;
	u64 modlist_paddr;
	u64 cmdline_paddr;
	u64 rsdp_paddr;
	u64 memmap_paddr;
	u32 memmap_entries;
	u32 reserved;
};

struct hvm_modlist_entry {
	u64 paddr;
	u64 size;
	u64 cmdline_paddr;
	u64 reserved;
};

struct hvm_memmap_table_entry {
	u64 addr;
	u64 size;
	u32 type;		/* E820 type: 1 = RAM */
	u32 reserved;
};

static inline void outb(u16 port, u8 v) { __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port)); }
static inline void outw(u16 port, u16 v) { __asm__ volatile("outw %0, %1" : : "a"(v), "Nd"(port)); }
static inline u8 inb(u16 port)
{
	u8 v;
	__asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
	return v;
}

void print_char(char c);
void print(const char *s);
void print_hex(u64 v);		/* "0x" + minimal hex digits */
void print_dec(u32 v);
void print_dec2(u32 v);		/* two digits, zero padded */

/* Each payload defines this; start.S calls it with EBX (the start info). */
void pvh_main(const struct hvm_start_info *si);

/* Ways out. Each one reports "... FAILED" and halts if the VMM ignores it. */
void reset_i8042(void) __attribute__((noreturn));
void poweroff_acpi(void) __attribute__((noreturn));
void halt(void) __attribute__((noreturn));

#endif
