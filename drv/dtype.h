/* dtype: element types shared by the loader, the engine and every backend, with the
 * scalar conversions the CPU paths use. bf16 -> f32 is exact; f32 -> bf16 rounds to nearest
 * even like PyTorch. Header-only, no state. */
#ifndef ZP_DTYPE_H
#define ZP_DTYPE_H

#include <stdint.h>
#include <string.h>

typedef enum { ZP_F32 = 0, ZP_BF16 = 1, ZP_F16 = 2 } zp_dtype;

static inline size_t zp_dtype_size(zp_dtype t) { return t == ZP_F32 ? 4 : 2; }
static inline const char *zp_dtype_name(zp_dtype t) {
    return t == ZP_F32 ? "F32" : t == ZP_BF16 ? "BF16" : "F16";
}

static inline float zp_bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline uint16_t zp_f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7F800000u) == 0x7F800000u && (u & 0x7FFFFFu)) return (uint16_t)((u >> 16) | 0x40);
    u += 0x7FFFu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

static inline float zp_f16_to_f32(uint16_t h) {
    uint32_t s = (uint32_t)(h & 0x8000) << 16, e = (h >> 10) & 0x1F, m = h & 0x3FF, u;
    if (e == 0) {
        if (m == 0) u = s;
        else { /* subnormal: renormalise */
            e = 127 - 15 + 1;
            while (!(m & 0x400)) m <<= 1, e--;
            u = s | (e << 23) | ((m & 0x3FF) << 13);
        }
    } else if (e == 31) {
        u = s | 0x7F800000u | (m << 13);
    } else {
        u = s | ((e + 127 - 15) << 23) | (m << 13);
    }
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline uint16_t zp_f32_to_f16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    uint32_t s = (u >> 16) & 0x8000;
    int32_t e = (int32_t)((u >> 23) & 0xFF) - 127 + 15;
    uint32_t m = u & 0x7FFFFF;
    if (((u >> 23) & 0xFF) == 0xFF) return (uint16_t)(s | 0x7C00 | (m ? 0x200 : 0));
    if (e >= 31) return (uint16_t)(s | 0x7C00);
    if (e <= 0) {
        if (e < -10) return (uint16_t)s;
        m |= 0x800000;
        uint32_t shift = (uint32_t)(14 - e);
        uint32_t r = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (r & 1))) r++;
        return (uint16_t)(s | r);
    }
    uint32_t r = (uint32_t)e << 10 | (m >> 13), rem = m & 0x1FFF;
    if (rem > 0x1000 || (rem == 0x1000 && (r & 1))) r++;
    return (uint16_t)(s | r);
}

/* Element i of a buffer of type t, as f32. */
static inline float zp_load(const void *p, zp_dtype t, size_t i) {
    if (t == ZP_F32) return ((const float *)p)[i];
    uint16_t h = ((const uint16_t *)p)[i];
    return t == ZP_BF16 ? zp_bf16_to_f32(h) : zp_f16_to_f32(h);
}

#endif
