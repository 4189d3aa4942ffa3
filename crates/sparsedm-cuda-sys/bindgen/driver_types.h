/* Stub of the CUDA runtime's driver_types.h for `cargo xtask bindgen`: cusparseLt.h only needs
 * cudaStream_t from it. Written for sparsedm (not an NVIDIA file); the real header would pull in
 * the whole CUDA runtime include tree. */
#ifndef SPARSEDM_STUB_DRIVER_TYPES_H
#define SPARSEDM_STUB_DRIVER_TYPES_H

typedef struct CUstream_st *cudaStream_t;

#endif /* SPARSEDM_STUB_DRIVER_TYPES_H */
