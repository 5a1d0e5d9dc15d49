//! vireo-vmm
