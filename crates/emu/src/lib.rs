//! `emu`: full virtualization in software (seed 2.1, "全虚拟化"). An x86-64 emulator that runs
//! a stock Linux kernel behind the same `Vm`/`Vcpu` traits as the KVM backend, with its own
//! models of the interrupt controllers and timers that KVM keeps in the kernel.

pub mod backend;
pub mod cpu;
pub mod irq;
pub mod testutil;

pub use backend::EmuHypervisor;
