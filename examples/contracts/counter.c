/*
 * counter: a single u64 counter stored under the key "counter".
 *
 *   increment  ()  -> u64 LE, the new value
 *   get        ()  -> u64 LE, the current value (0 before the first increment)
 *   reset      ()  -> nothing; deletes the key
 */
#include "supervm.h"

static const char KEY[] = "counter";
#define KEY_LEN ((int32_t)(sizeof KEY - 1))

SUPERVM_EXPORT(increment) void increment(void) {
    uint64_t value = supervm_get_u64(KEY, KEY_LEN);
    if (value == UINT64_MAX) supervm_revert_str("counter overflow");
    value += 1;
    supervm_set_u64(KEY, KEY_LEN, value);
    supervm_return_u64(value);
}

SUPERVM_EXPORT(get) void get(void) {
    supervm_return_u64(supervm_get_u64(KEY, KEY_LEN));
}

SUPERVM_EXPORT(reset) void reset(void) {
    storage_delete(KEY, KEY_LEN);
}
