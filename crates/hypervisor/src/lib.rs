//! vireo-hypervisor
