/*
 * registry: a first-come name -> value registry, listed with prefix iteration.
 *
 *   register  ([n: u8][name: n bytes][value: rest])  -> nothing
 *       Reverts "empty name", "name too long" (over 251 bytes), "bad input"
 *       (fewer than n name bytes), "value too long" (over 1024 bytes) or
 *       "name taken".
 *   lookup    (name)    -> the value; reverts "not found"
 *   list      (prefix)  -> every entry whose name starts with prefix, in
 *       ascending byte order, each as [n: u8][name][len: u16 LE][value];
 *       reverts "result too large" past 32 KiB
 *   count     ()        -> u32 LE, the number of names
 *
 * Storage: "name/" + name -> value.
 */
#include "supervm.h"

#define PREFIX "name/"
#define PREFIX_LEN 5
#define MAX_NAME (SUPERVM_MAX_KEY_SIZE - PREFIX_LEN)
#define MAX_VALUE 1024
#define MAX_RESULT (32 * 1024)

static unsigned char in[1 + MAX_NAME + MAX_VALUE];
static unsigned char key[SUPERVM_MAX_KEY_SIZE];
static unsigned char result[MAX_RESULT];

/* Build "name/" + name in key; return its length. */
static int32_t name_key(const unsigned char *name, int32_t n) {
    supervm_copy(key, PREFIX, PREFIX_LEN);
    supervm_copy(key + PREFIX_LEN, name, n);
    return PREFIX_LEN + n;
}

SUPERVM_EXPORT(register) void register_(void) {
    int32_t len = input();
    if (len < 1) supervm_revert_str("empty name");
    if (len > (int32_t)sizeof in) supervm_revert_str("value too long");
    read_register(in);
    int32_t n = in[0];
    if (n == 0) supervm_revert_str("empty name");
    if (n > MAX_NAME) supervm_revert_str("name too long");
    if (len < 1 + n) supervm_revert_str("bad input");
    int32_t value_len = len - 1 - n;
    if (value_len > MAX_VALUE) supervm_revert_str("value too long");
    int32_t key_len = name_key(in + 1, n);
    if (storage_get(key, key_len) >= 0) supervm_revert_str("name taken");
    storage_set(key, key_len, in + 1 + n, value_len);
}

SUPERVM_EXPORT(lookup) void lookup(void) {
    int32_t n = input();
    if (n < 1 || n > MAX_NAME) supervm_revert_str("not found");
    read_register(in);
    int32_t key_len = name_key(in, n);
    int32_t value_len = supervm_get(key, key_len, in, MAX_VALUE);
    if (value_len < 0) supervm_revert_str("not found");
    return_data(in, value_len);
}

SUPERVM_EXPORT(list) void list(void) {
    int32_t n = input();
    if (n > MAX_NAME) supervm_revert_str("prefix too long");
    read_register(in);
    int32_t handle = storage_iter(key, name_key(in, n));
    int32_t out = 0;
    for (;;) {
        int32_t key_len = storage_iter_next(handle);
        if (key_len < 0) break;
        read_register(key);
        int32_t name_len = key_len - PREFIX_LEN;
        int32_t value_len = storage_iter_value(handle);
        if (value_len > MAX_VALUE) supervm_revert_str("value too long");
        if (out + 1 + name_len + 2 + value_len > MAX_RESULT) supervm_revert_str("result too large");
        result[out++] = (unsigned char)name_len;
        supervm_copy(result + out, key + PREFIX_LEN, name_len);
        out += name_len;
        result[out++] = (unsigned char)value_len;
        result[out++] = (unsigned char)(value_len >> 8);
        read_register(result + out);
        out += value_len;
    }
    return_data(result, out);
}

SUPERVM_EXPORT(count) void count(void) {
    int32_t handle = storage_iter(PREFIX, PREFIX_LEN);
    uint32_t names = 0;
    while (storage_iter_next(handle) >= 0) names++;
    unsigned char out[4];
    supervm_store_u32le(out, names);
    return_data(out, 4);
}
