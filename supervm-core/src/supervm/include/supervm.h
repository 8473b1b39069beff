/*
 * supervm.h - the SuperVM Host ABI, version 1, for contracts written in C.
 *
 * A contract is a wasm32 module that exports its linear memory as "memory" and
 * one `void name(void)` function per method. A method reads its input with
 * input() + read_register(), sets its result with return_data() and may stop
 * with revert(). Host functions that produce bytes put them in the single host
 * register and return their length; read_register() copies the whole register
 * into guest memory.
 *
 * Build with `supervm build contract.c -o contract.wasm`, or directly:
 *   zig cc --target=wasm32-freestanding -mcpu=mvp -O2 -nostdlib -Wl,--no-entry \
 *          -Wl,-z,stack-size=16384 -Wl,--strip-all -I <this directory> contract.c
 *
 * Gas: every host call costs `base + per_byte * bytes moved`; the figures are
 * given with each declaration. The full specification is docs/abi.md.
 *
 * Pointers are offsets into the contract's memory; lengths are non-negative
 * int32_t. A range past the end of memory, a negative length, an empty key or a
 * size over a limit stops the call with status "trapped"; nothing it wrote is
 * kept.
 */
#ifndef SUPERVM_H
#define SUPERVM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SUPERVM_ABI_VERSION 1

/* Limits of ABI v1 (supervm.vm.abi.Limits). */
#define SUPERVM_MAX_KEY_SIZE 256
#define SUPERVM_MAX_VALUE_SIZE (64 * 1024)
#define SUPERVM_MAX_INPUT_SIZE (64 * 1024)
#define SUPERVM_MAX_RETURN_SIZE (64 * 1024)
#define SUPERVM_MAX_EVENTS 64
#define SUPERVM_MAX_TOPIC_SIZE 128
#define SUPERVM_MAX_EVENT_DATA_SIZE (4 * 1024)
#define SUPERVM_MAX_ITERATORS 16

/* Length of an account or contract address. */
#define SUPERVM_ADDRESS_SIZE 20

/* Import a host function from module "env" under its ABI name. */
#define SUPERVM_IMPORT(name) __attribute__((import_module("env"), import_name(#name)))

/* Export a contract method: SUPERVM_EXPORT(transfer) void transfer(void) { ... } */
#define SUPERVM_EXPORT(name) __attribute__((export_name(#name)))

#ifdef __cplusplus
extern "C" {
#endif

/*
 * Host functions, ABI v1: one declaration per line, in the order of
 * docs/abi.md, each in the form
 *   SUPERVM_IMPORT(name) <return type> name(<parameters>);
 */
/* BEGIN SUPERVM CORE HOST FUNCTIONS */

/* Copy the register's bytes to guest memory at ptr. Gas: 10 + 1/byte. */
SUPERVM_IMPORT(read_register) void read_register(void *ptr);

/* Put the call input in the register; return its length. Gas: 20 + 1/byte. */
SUPERVM_IMPORT(input) int32_t input(void);

/* Put the sender's address in the register; return its length. Gas: 20 + 1/byte. */
SUPERVM_IMPORT(caller) int32_t caller(void);

/* Put this contract's address in the register; return its length. Gas: 20 + 1/byte. */
SUPERVM_IMPORT(address) int32_t address(void);

/* Height of the block being executed. Gas: 10. */
SUPERVM_IMPORT(block_height) int64_t block_height(void);

/* Timestamp of the block being executed. Gas: 10. */
SUPERVM_IMPORT(block_timestamp) int64_t block_timestamp(void);

/* Put the value of key (ptr, len) in the register; return its length, or -1 if
 * absent (the register is then empty). Gas: 200 + 1/byte (key and value). */
SUPERVM_IMPORT(storage_get) int32_t storage_get(const void *key, int32_t key_len);

/* Store value (ptr, len) under key (ptr, len). Gas: 400 + 2/byte (key and value). */
SUPERVM_IMPORT(storage_set) void storage_set(const void *key, int32_t key_len, const void *value, int32_t value_len);

/* Delete key (ptr, len); absent keys are fine. Gas: 300 + 1/byte. */
SUPERVM_IMPORT(storage_delete) void storage_delete(const void *key, int32_t key_len);

/* Open an iterator over this contract's keys starting with prefix (ptr, len);
 * return its handle. Gas: 300 + 1/byte. */
SUPERVM_IMPORT(storage_iter) int32_t storage_iter(const void *prefix, int32_t prefix_len);

/* Advance the iterator; put the next key (without the namespace) in the
 * register and return its length, or -1 when done. Gas: 100 + 1/byte. */
SUPERVM_IMPORT(storage_iter_next) int32_t storage_iter_next(int32_t handle);

/* Put the value at the iterator's current key in the register; return its
 * length. Gas: 50 + 1/byte. */
SUPERVM_IMPORT(storage_iter_value) int32_t storage_iter_value(int32_t handle);

/* Set the call's return data to (ptr, len). Gas: 20 + 1/byte. */
SUPERVM_IMPORT(return_data) void return_data(const void *ptr, int32_t len);

/* Stop with status reverted and message (ptr, len); nothing the call wrote is
 * kept. Never returns. Gas: 20 + 1/byte. */
SUPERVM_IMPORT(revert) void revert(const void *msg, int32_t len);

/* Record an event with topic (ptr, len) and data (ptr, len). Gas: 200 + 2/byte. */
SUPERVM_IMPORT(emit_event) void emit_event(const void *topic, int32_t topic_len, const void *data, int32_t data_len);

/* END SUPERVM CORE HOST FUNCTIONS */

/*
 * Optional host functions added by plugins. A contract that uses one can only
 * be deployed on a node with the plugin installed. Each is declared only when
 * its macro is defined before including this header.
 */
/* BEGIN SUPERVM PLUGIN HOST FUNCTIONS */

#ifdef SUPERVM_PLUGIN_SHA256
/* [plugin supervm.contrib.sha256] Put the SHA-256 digest of (ptr, len) in
 * the register; return 32. Gas: 100 + 1/byte. */
SUPERVM_IMPORT(sha256) int32_t sha256(const void *ptr, int32_t len);
#endif

/* END SUPERVM PLUGIN HOST FUNCTIONS */

/*
 * Memory functions. With -nostdlib there is no libc, yet the compiler may emit
 * calls to memcpy, memmove, memset and memcmp (struct copies, zeroing loops).
 * These weak definitions satisfy them; define SUPERVM_NO_MEM_FUNCTIONS before
 * including this header to provide your own.
 */
#ifndef SUPERVM_NO_MEM_FUNCTIONS
__attribute__((weak)) void *memcpy(void *dst, const void *src, size_t n) {
    unsigned char *d = (unsigned char *)dst;
    const unsigned char *s = (const unsigned char *)src;
    while (n--) *d++ = *s++;
    return dst;
}

__attribute__((weak)) void *memmove(void *dst, const void *src, size_t n) {
    unsigned char *d = (unsigned char *)dst;
    const unsigned char *s = (const unsigned char *)src;
    if (d < s) {
        while (n--) *d++ = *s++;
    } else {
        while (n--) d[n] = s[n];
    }
    return dst;
}

__attribute__((weak)) void *memset(void *dst, int c, size_t n) {
    unsigned char *d = (unsigned char *)dst;
    while (n--) *d++ = (unsigned char)c;
    return dst;
}

__attribute__((weak)) int memcmp(const void *a, const void *b, size_t n) {
    const unsigned char *x = (const unsigned char *)a;
    const unsigned char *y = (const unsigned char *)b;
    for (; n; n--, x++, y++) {
        if (*x != *y) return (int)*x - (int)*y;
    }
    return 0;
}
#endif

/* ---- Helpers -------------------------------------------------------------- */

/* Length of a NUL-terminated string. */
static inline int32_t supervm_strlen(const char *s) {
    int32_t n = 0;
    while (s[n]) n++;
    return n;
}

/* Whether (a, n) and (b, n) hold the same bytes. */
static inline bool supervm_equal(const void *a, const void *b, int32_t n) {
    const unsigned char *x = (const unsigned char *)a;
    const unsigned char *y = (const unsigned char *)b;
    for (int32_t i = 0; i < n; i++) {
        if (x[i] != y[i]) return false;
    }
    return true;
}

/* Copy n bytes from src to dst (the ranges must not overlap). */
static inline void supervm_copy(void *dst, const void *src, int32_t n) {
    unsigned char *d = (unsigned char *)dst;
    const unsigned char *s = (const unsigned char *)src;
    for (int32_t i = 0; i < n; i++) d[i] = s[i];
}

/* Revert with (msg, len); never returns. */
__attribute__((noreturn)) static inline void supervm_revert(const void *msg, int32_t len) {
    revert(msg, len);
    __builtin_unreachable();
}

/* Revert with a NUL-terminated message; never returns. */
__attribute__((noreturn)) static inline void supervm_revert_str(const char *msg) {
    supervm_revert(msg, supervm_strlen(msg));
}

/* Set the call's return data to (ptr, len). */
static inline void supervm_return(const void *ptr, int32_t len) {
    return_data(ptr, len);
}

/* Set the call's return data to a NUL-terminated string (without the NUL). */
static inline void supervm_return_str(const char *s) {
    return_data(s, supervm_strlen(s));
}

/* After a host call that put len bytes in the register, copy them to buf
 * (capacity cap) and return len; -1 (absent, done) is returned as is.
 * Reverts with msg if len exceeds cap. */
static inline int32_t supervm_read_into(int32_t len, void *buf, int32_t cap, const char *msg) {
    if (len < 0) return len;
    if (len > cap) supervm_revert_str(msg);
    read_register(buf);
    return len;
}

/* Read the call input into buf (capacity cap); return its length. Reverts
 * with "input too large" if it does not fit. */
static inline int32_t supervm_input(void *buf, int32_t cap) {
    return supervm_read_into(input(), buf, cap, "input too large");
}

/* Read the call input, which must be exactly len bytes (else revert with
 * "bad input length"), into buf. */
static inline void supervm_input_exact(void *buf, int32_t len) {
    if (input() != len) supervm_revert_str("bad input length");
    read_register(buf);
}

/* Read the sender's address into buf (capacity cap); return its length. */
static inline int32_t supervm_caller(void *buf, int32_t cap) {
    return supervm_read_into(caller(), buf, cap, "address too large");
}

/* Read this contract's address into buf (capacity cap); return its length. */
static inline int32_t supervm_address(void *buf, int32_t cap) {
    return supervm_read_into(address(), buf, cap, "address too large");
}

/* Read the value of key into buf (capacity cap). Returns its length, or -1 if
 * the key is absent; reverts with "value too large" if it does not fit. */
static inline int32_t supervm_get(const void *key, int32_t key_len, void *buf, int32_t cap) {
    return supervm_read_into(storage_get(key, key_len), buf, cap, "value too large");
}

/* Store value under key. */
static inline void supervm_set(const void *key, int32_t key_len, const void *value, int32_t value_len) {
    storage_set(key, key_len, value, value_len);
}

/* Emit an event whose topic is a NUL-terminated string. */
static inline void supervm_emit(const char *topic, const void *data, int32_t data_len) {
    emit_event(topic, supervm_strlen(topic), data, data_len);
}

/* Little-endian integer encoding, the convention of the example contracts. */
static inline uint64_t supervm_load_u64le(const void *p) {
    const unsigned char *b = (const unsigned char *)p;
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | b[i];
    return v;
}

static inline void supervm_store_u64le(void *p, uint64_t v) {
    unsigned char *b = (unsigned char *)p;
    for (int i = 0; i < 8; i++) {
        b[i] = (unsigned char)v;
        v >>= 8;
    }
}

static inline uint32_t supervm_load_u32le(const void *p) {
    const unsigned char *b = (const unsigned char *)p;
    return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}

static inline void supervm_store_u32le(void *p, uint32_t v) {
    unsigned char *b = (unsigned char *)p;
    b[0] = (unsigned char)v;
    b[1] = (unsigned char)(v >> 8);
    b[2] = (unsigned char)(v >> 16);
    b[3] = (unsigned char)(v >> 24);
}

/* Read a u64 stored little-endian under key; absent reads as 0. Reverts with
 * "corrupt u64 value" if the stored value is not 8 bytes. */
static inline uint64_t supervm_get_u64(const void *key, int32_t key_len) {
    unsigned char buf[8];
    int32_t n = storage_get(key, key_len);
    if (n < 0) return 0;
    if (n != 8) supervm_revert_str("corrupt u64 value");
    read_register(buf);
    return supervm_load_u64le(buf);
}

/* Store a u64 little-endian under key. */
static inline void supervm_set_u64(const void *key, int32_t key_len, uint64_t value) {
    unsigned char buf[8];
    supervm_store_u64le(buf, value);
    storage_set(key, key_len, buf, 8);
}

/* Set the return data to a u64, little-endian. */
static inline void supervm_return_u64(uint64_t value) {
    unsigned char buf[8];
    supervm_store_u64le(buf, value);
    return_data(buf, 8);
}

#ifdef __cplusplus
}
#endif

#endif /* SUPERVM_H */
