/* idle: say so, then halt with interrupts off, so the VM stays Running until the VMM stops it
 * (used by the API and benchmark runs). */
#include "lib.h"

void pvh_main(const struct hvm_start_info *si)
{
	(void)si;
	print("vireo-pvh: idle\n");
	halt();
}
