//! x86-64 platform and boot: guest memory layout, kernel loaders, boot structures, ACPI tables
//! and the CPUID policy.

pub mod acpi;
pub mod boot;
pub mod bzimage;
pub mod cpuid;
pub mod elf;
pub mod layout;
pub mod loader;
