/*
 * hello: dump what the VMM passed in struct hvm_start_info (magic, command
 * line, modules, memory map), then reset through the i8042.
 */
#include "lib.h"

static void print_memmap(const struct hvm_start_info *si)
{
	const struct hvm_memmap_table_entry *e;
	u64 ram = 0;

	/* memmap_* only exist from version 1; PVH v0 loaders don't pass one. */
	if (si->version < 1 || !si->memmap_paddr || !si->memmap_entries) {
		print("memmap none\n");
		return;
	}
	e = (const struct hvm_memmap_table_entry *)(u32)si->memmap_paddr;
	for (u32 i = 0; i < si->memmap_entries; i++) {
		print("mem ");
		print_hex(e[i].addr);
		print_char(' ');
		print_hex(e[i].size);
		print_char(' ');
		print_dec(e[i].type);
		print_char('\n');
		if (e[i].type == 1)
			ram += e[i].size;
	}
	print("ram total ");
	print_hex(ram);
	print_char('\n');
}

/* Print each module (the initrd) with a byte sum so a test can check its contents. */
static void print_modules(const struct hvm_start_info *si)
{
	const struct hvm_modlist_entry *m = (const void *)(u32)si->modlist_paddr;

	print("modules ");
	print_dec(si->nr_modules);
	print_char('\n');
	for (u32 i = 0; i < si->nr_modules && si->modlist_paddr; i++) {
		const u8 *p = (const u8 *)(u32)m[i].paddr;
		u32 sum = 0;

		/* Paging is off: only memory below 4 GiB is reachable. */
		if (m[i].paddr + m[i].size <= 0x100000000ull)
			for (u32 j = 0; j < (u32)m[i].size; j++)
				sum += p[j];
		print("module ");
		print_dec(i);
		print_char(' ');
		print_hex(m[i].paddr);
		print_char(' ');
		print_hex(m[i].size);
		print(" sum ");
		print_hex(sum);
		print_char('\n');
	}
}

void pvh_main(const struct hvm_start_info *si)
{
	print("vireo-pvh: hello\n");
	if (si->magic != HVM_START_MAGIC) {
		print("magic BAD ");
		print_hex(si->magic);
		print_char('\n');
		reset_i8042();
	}
	print("magic ok\n");
	print("version ");
	print_dec(si->version);
	print(" flags ");
	print_hex(si->flags);
	print(" rsdp ");
	print_hex(si->rsdp_paddr);
	print_char('\n');

	if (si->cmdline_paddr) {
		print("cmdline \"");
		print((const char *)(u32)si->cmdline_paddr);
		print("\"\n");
	} else {
		print("cmdline none\n");
	}
	print_modules(si);
	print_memmap(si);

	print("vireo-pvh: reset\n");
	reset_i8042();
}
