//! vireo-image
