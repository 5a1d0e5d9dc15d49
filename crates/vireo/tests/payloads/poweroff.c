/* poweroff: say hello, then ask for ACPI S5 soft-off through PM1a_CNT. */
#include "lib.h"

void pvh_main(const struct hvm_start_info *si)
{
	(void)si;
	print("vireo-pvh: poweroff\n");
	poweroff_acpi();
}
