/*
 * XTS-plain64 over 512-byte sectors (LUKS1, dm-crypt, qemu, nbdkit), as a loop of OpenSSL's
 * own AES-XTS: sector n is one XTS data unit whose IV is n as a 128-bit little-endian number.
 * Nothing here is cryptography of its own; it exists so that the per-sector loop does not run
 * in Python (two ctypes calls per sector cost ~1.4 us, the cipher itself ~0.1 us).
 *
 * Loaded with ctypes by adapters/block/sector_crypto.py, which says why ctypes. Built by the
 * Makefile (`make deps`): cc -O2 -shared -fPIC xts_sectors.c -lcrypto.
 *
 * Re-IV, the per-sector cost that matters (OpenSSL 3.0, AES-256-XTS, 512-byte units, measured
 * here; the update alone is ~100 ns):
 *   EVP_CipherInit_ex(ctx, NULL, NULL, NULL, iv, -1)     ~160 ns per sector in all
 *   EVP_CipherInit_ex2(ctx, NULL, NULL, iv, -1, NULL)    the same
 *   EVP_CIPHER_CTX_set_params(OSSL_CIPHER_PARAM_IV)      not a way at all: the XTS provider
 *                                                        returns success and ignores it, so
 *                                                        every sector would reuse one tweak
 *   the provider's own encrypt_init / update             ~120 ns per sector in all
 * The last is the same OpenSSL implementation that EVP dispatches to, reached through the
 * public provider API (OSSL_PROVIDER_query_operation, provider-cipher(7)) on the provider
 * that EVP_CIPHER_fetch picks, so configuration (a FIPS provider, say) still decides which
 * implementation runs. What it skips is EVP's per-call bookkeeping. It is used when the
 * provider offers it and gives the same bytes as EVP on a test sector at key setup; EVP is
 * the fallback, and the tests run both.
 *
 * A context is not thread-safe: callers use one per thread (ssegw_xts_dup makes more from a
 * keyed one without the key leaving OpenSSL).
 */

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_dispatch.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/provider.h>

#define SECTOR_SIZE 512

struct direct {
    EVP_CIPHER *cipher; /* holds the provider, and so the functions below, loaded */
    void *algctx;
    OSSL_FUNC_cipher_encrypt_init_fn *encrypt_init;
    OSSL_FUNC_cipher_decrypt_init_fn *decrypt_init;
    OSSL_FUNC_cipher_update_fn *update;
    OSSL_FUNC_cipher_dupctx_fn *dupctx;
    OSSL_FUNC_cipher_freectx_fn *freectx;
};

struct ssegw_xts {
    int encrypt;
    EVP_CIPHER_CTX *evp;   /* used when direct is NULL */
    struct direct *direct; /* NULL: the provider path is unavailable or turned off */
};

/* Bumped whenever a signature changes, so Python refuses a stale build instead of
 * calling it with the wrong arguments. */
int ssegw_xts_abi(void)
{
    return 2;
}

static int is_token(const char *names, const char *name)
{
    size_t n = strlen(name);
    const char *p = names;

    /* names is a colon-separated list of aliases */
    while ((p = strstr(p, name)) != NULL) {
        if ((p == names || p[-1] == ':') && (p[n] == '\0' || p[n] == ':'))
            return 1;
        p += n;
    }
    return 0;
}

static void direct_free(struct direct *d)
{
    if (d == NULL)
        return;
    if (d->algctx != NULL)
        d->freectx(d->algctx);
    EVP_CIPHER_free(d->cipher);
    free(d);
}

static int direct_iv(struct direct *d, int encrypt, const unsigned char *key, size_t key_len,
                     const unsigned char *iv)
{
    return encrypt ? d->encrypt_init(d->algctx, key, key_len, iv, 16, NULL)
                   : d->decrypt_init(d->algctx, key, key_len, iv, 16, NULL);
}

/* The provider's own XTS functions for `name`, keyed; NULL where anything is missing. */
static struct direct *direct_new(const char *name, const unsigned char *key, int key_len,
                                 int encrypt)
{
    static const unsigned char zero_iv[16];
    struct direct *d = calloc(1, sizeof(*d));
    const OSSL_ALGORITHM *algs, *a;
    const OSSL_DISPATCH *f = NULL;
    const OSSL_PROVIDER *prov;
    OSSL_FUNC_cipher_newctx_fn *newctx = NULL;
    int no_store = 0;

    if (d == NULL)
        return NULL;
    d->cipher = EVP_CIPHER_fetch(NULL, name, NULL);
    prov = d->cipher != NULL ? EVP_CIPHER_get0_provider(d->cipher) : NULL;
    algs = prov != NULL ? OSSL_PROVIDER_query_operation(prov, OSSL_OP_CIPHER, &no_store) : NULL;
    for (a = algs; a != NULL && a->algorithm_names != NULL; a++) {
        if (is_token(a->algorithm_names, name)) {
            f = a->implementation;
            break;
        }
    }
    for (; f != NULL && f->function_id != 0; f++) {
        switch (f->function_id) {
        case OSSL_FUNC_CIPHER_NEWCTX:
            newctx = OSSL_FUNC_cipher_newctx(f);
            break;
        case OSSL_FUNC_CIPHER_ENCRYPT_INIT:
            d->encrypt_init = OSSL_FUNC_cipher_encrypt_init(f);
            break;
        case OSSL_FUNC_CIPHER_DECRYPT_INIT:
            d->decrypt_init = OSSL_FUNC_cipher_decrypt_init(f);
            break;
        case OSSL_FUNC_CIPHER_UPDATE:
            d->update = OSSL_FUNC_cipher_update(f);
            break;
        case OSSL_FUNC_CIPHER_DUPCTX:
            d->dupctx = OSSL_FUNC_cipher_dupctx(f);
            break;
        case OSSL_FUNC_CIPHER_FREECTX:
            d->freectx = OSSL_FUNC_cipher_freectx(f);
            break;
        }
    }
    if (algs != NULL)
        OSSL_PROVIDER_unquery_operation(prov, OSSL_OP_CIPHER, algs);
    if (newctx == NULL || d->encrypt_init == NULL || d->decrypt_init == NULL
            || d->update == NULL || d->dupctx == NULL || d->freectx == NULL) {
        d->freectx = NULL; /* there is no algctx to free */
        direct_free(d);
        return NULL;
    }
    d->algctx = newctx(OSSL_PROVIDER_get0_provider_ctx(prov));
    if (d->algctx == NULL
            || direct_iv(d, encrypt, key, (size_t)key_len, zero_iv) != 1) {
        direct_free(d);
        return NULL;
    }
    return d;
}

static int sector_direct(struct direct *d, int encrypt, const unsigned char *iv,
                         const unsigned char *src, unsigned char *dst)
{
    size_t outl = 0;

    return direct_iv(d, encrypt, NULL, 0, iv) == 1
        && d->update(d->algctx, dst, &outl, SECTOR_SIZE, src, SECTOR_SIZE) == 1
        && outl == SECTOR_SIZE;
}

static int sector_evp(EVP_CIPHER_CTX *ctx, const unsigned char *iv, const unsigned char *src,
                      unsigned char *dst)
{
    int outl = 0;

    return EVP_CipherInit_ex(ctx, NULL, NULL, NULL, iv, -1) == 1
        && EVP_CipherUpdate(ctx, dst, &outl, src, SECTOR_SIZE) == 1
        && outl == SECTOR_SIZE;
}

void ssegw_xts_free(struct ssegw_xts *x)
{
    if (x == NULL)
        return;
    direct_free(x->direct); /* the provider's freectx cleanses its key schedule */
    EVP_CIPHER_CTX_free(x->evp);
    free(x);
}

/* Keyed once for one direction (encrypt 1, decrypt 0), through the provider's functions
 * if `direct` and they are there. NULL if OpenSSL refuses the key (wrong length, or two
 * equal halves). */
struct ssegw_xts *ssegw_xts_new(const unsigned char *key, int key_len, int encrypt,
                                int direct)
{
    static const unsigned char zero_iv[16], probe[SECTOR_SIZE];
    unsigned char via_evp[SECTOR_SIZE], via_direct[SECTOR_SIZE];
    const char *name = key_len == 64 ? "AES-256-XTS" : "AES-128-XTS";
    struct ssegw_xts *x;

    if (key_len != 64 && key_len != 32)
        return NULL;
    /* Equal halves make XTS's tweak key its data key (IEEE 1619 forbids it). OpenSSL refuses
     * them on the EVP path; the direct provider path is not promised to, so say it here. */
    if (CRYPTO_memcmp(key, key + key_len / 2, (size_t)key_len / 2) == 0)
        return NULL;
    x = calloc(1, sizeof(*x));
    if (x == NULL)
        return NULL;
    x->encrypt = encrypt ? 1 : 0;
    x->evp = EVP_CIPHER_CTX_new();
    if (x->evp == NULL
            || EVP_CipherInit_ex(x->evp, key_len == 64 ? EVP_aes_256_xts() : EVP_aes_128_xts(),
                                 NULL, key, zero_iv, x->encrypt) != 1) {
        ssegw_xts_free(x);
        return NULL;
    }
    if (direct)
        x->direct = direct_new(name, key, key_len, x->encrypt);
    if (x->direct != NULL
            && (!sector_evp(x->evp, zero_iv, probe, via_evp)
                || !sector_direct(x->direct, x->encrypt, zero_iv, probe, via_direct)
                || memcmp(via_evp, via_direct, SECTOR_SIZE) != 0)) {
        direct_free(x->direct);
        x->direct = NULL;
    }
    OPENSSL_cleanse(via_evp, sizeof(via_evp));
    OPENSSL_cleanse(via_direct, sizeof(via_direct));
    if (x->direct != NULL) { /* the EVP context is no longer needed: drop its key too */
        EVP_CIPHER_CTX_free(x->evp);
        x->evp = NULL;
    }
    return x;
}

/* 1 if sectors go through the provider's functions, 0 if through EVP. */
int ssegw_xts_direct(const struct ssegw_xts *x)
{
    return x->direct != NULL;
}

/* Another context with the same key and direction, for another thread. */
struct ssegw_xts *ssegw_xts_dup(const struct ssegw_xts *x)
{
    struct ssegw_xts *y = calloc(1, sizeof(*y));

    if (y == NULL)
        return NULL;
    y->encrypt = x->encrypt;
    if (x->direct != NULL) {
        y->direct = calloc(1, sizeof(*y->direct));
        if (y->direct == NULL || EVP_CIPHER_up_ref(x->direct->cipher) != 1) {
            free(y->direct);
            free(y);
            return NULL;
        }
        *y->direct = *x->direct;
        y->direct->algctx = x->direct->dupctx(x->direct->algctx);
        if (y->direct->algctx == NULL) {
            ssegw_xts_free(y);
            return NULL;
        }
        return y;
    }
    y->evp = EVP_CIPHER_CTX_new();
    if (y->evp == NULL || EVP_CIPHER_CTX_copy(y->evp, x->evp) != 1) {
        ssegw_xts_free(y);
        return NULL;
    }
    return y;
}

/* `count` sectors from `src` to `dst` (which may be the same buffer), the first being
 * sector `first`. Returns 1, or 0 if OpenSSL failed or the sector numbers would wrap. */
int ssegw_xts_sectors(struct ssegw_xts *x, uint64_t first, size_t count,
                      const unsigned char *src, unsigned char *dst)
{
    unsigned char iv[16] = {0}; /* bytes 8..15 stay zero: plain64 is a 64-bit counter */
    size_t i;
    int b, ok;

    if (count > 0 && first + (count - 1) < first)
        return 0;
    for (i = 0; i < count; i++) {
        uint64_t n = first + i;

        for (b = 0; b < 8; b++)
            iv[b] = (unsigned char)(n >> (8 * b));
        ok = x->direct != NULL
            ? sector_direct(x->direct, x->encrypt, iv, src + i * SECTOR_SIZE,
                            dst + i * SECTOR_SIZE)
            : sector_evp(x->evp, iv, src + i * SECTOR_SIZE, dst + i * SECTOR_SIZE);
        if (!ok)
            return 0;
    }
    return 1;
}
