/*
 * token: a fungible token.
 *
 *   mint          (to: 20 bytes, amount: u64 LE)  -> nothing
 *       The first account ever to call mint becomes the owner (key "owner");
 *       afterwards only the owner may mint. Reverts "supply overflow" if the
 *       total supply would exceed 2^64 - 1.
 *   transfer      (to: 20 bytes, amount: u64 LE)  -> nothing
 *       Moves amount from the sender to `to`; reverts "insufficient balance".
 *       Emits topic "transfer" with data from (20) + to (20) + amount (u64 LE).
 *   balance       (account: 20 bytes)              -> u64 LE (0 if none)
 *   total_supply  ()                               -> u64 LE
 *
 * Storage: "owner" -> 20-byte address, "supply" -> u64 LE,
 * "bal/" + address -> u64 LE (a zero balance is deleted).
 */
#include "supervm.h"

#define ADDR SUPERVM_ADDRESS_SIZE
#define BAL_KEY_LEN (4 + ADDR)

static const char OWNER_KEY[] = "owner";
static const char SUPPLY_KEY[] = "supply";

static void sender(unsigned char out[ADDR]) {
    if (supervm_caller(out, ADDR) != ADDR) supervm_revert_str("sender address must be 20 bytes");
}

static void balance_key(unsigned char key[BAL_KEY_LEN], const unsigned char *account) {
    key[0] = 'b';
    key[1] = 'a';
    key[2] = 'l';
    key[3] = '/';
    supervm_copy(key + 4, account, ADDR);
}

static uint64_t balance_of(const unsigned char *account) {
    unsigned char key[BAL_KEY_LEN];
    balance_key(key, account);
    return supervm_get_u64(key, BAL_KEY_LEN);
}

static void set_balance(const unsigned char *account, uint64_t value) {
    unsigned char key[BAL_KEY_LEN];
    balance_key(key, account);
    if (value == 0) {
        storage_delete(key, BAL_KEY_LEN);
    } else {
        supervm_set_u64(key, BAL_KEY_LEN, value);
    }
}

SUPERVM_EXPORT(mint) void mint(void) {
    unsigned char in[ADDR + 8];
    unsigned char from[ADDR];
    unsigned char owner[ADDR];
    supervm_input_exact(in, ADDR + 8);
    const unsigned char *to = in;
    uint64_t amount = supervm_load_u64le(in + ADDR);

    sender(from);
    int32_t n = storage_get(OWNER_KEY, sizeof OWNER_KEY - 1);
    if (n < 0) {
        storage_set(OWNER_KEY, sizeof OWNER_KEY - 1, from, ADDR);
    } else {
        if (n != ADDR) supervm_revert_str("corrupt owner");
        read_register(owner);
        if (!supervm_equal(owner, from, ADDR)) supervm_revert_str("only the owner can mint");
    }

    uint64_t supply = supervm_get_u64(SUPPLY_KEY, sizeof SUPPLY_KEY - 1);
    if (amount > UINT64_MAX - supply) supervm_revert_str("supply overflow");
    uint64_t balance = balance_of(to);
    if (amount > UINT64_MAX - balance) supervm_revert_str("balance overflow");
    supervm_set_u64(SUPPLY_KEY, sizeof SUPPLY_KEY - 1, supply + amount);
    set_balance(to, balance + amount);
}

SUPERVM_EXPORT(transfer) void transfer(void) {
    unsigned char in[ADDR + 8];
    unsigned char event[ADDR + ADDR + 8];
    supervm_input_exact(in, ADDR + 8);
    const unsigned char *to = in;
    uint64_t amount = supervm_load_u64le(in + ADDR);
    unsigned char *from = event;
    sender(from);

    uint64_t from_balance = balance_of(from);
    if (from_balance < amount) supervm_revert_str("insufficient balance");
    set_balance(from, from_balance - amount);
    /* Read after the debit, so a transfer to oneself leaves the balance unchanged. */
    uint64_t to_balance = balance_of(to);
    if (amount > UINT64_MAX - to_balance) supervm_revert_str("balance overflow");
    set_balance(to, to_balance + amount);

    supervm_copy(event + ADDR, to, ADDR);
    supervm_store_u64le(event + 2 * ADDR, amount);
    supervm_emit("transfer", event, sizeof event);
}

SUPERVM_EXPORT(balance) void balance(void) {
    unsigned char account[ADDR];
    supervm_input_exact(account, ADDR);
    supervm_return_u64(balance_of(account));
}

SUPERVM_EXPORT(total_supply) void total_supply(void) {
    supervm_return_u64(supervm_get_u64(SUPPLY_KEY, sizeof SUPPLY_KEY - 1));
}
