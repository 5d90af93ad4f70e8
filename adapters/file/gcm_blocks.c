/*
 * The file adapter's block records (contentenc.py: nonce ‖ AES-256-GCM(4 KiB block) ‖ tag,
 * associated data = block number (8 bytes, big-endian) ‖ a tail the caller gives: the file id
 * in version 1; file id ‖ final flag in version 2, with a tail of its own for the final block)
 * as one loop of OpenSSL's own AES-256-GCM per run of blocks. Nothing here is cryptography of its own; the format is
 * contentenc.py's and the tests check both paths against each other and the frozen vectors.
 *
 * Why it exists (measured here, 2 cores, loaded): `cryptography`'s AESGCM holds the GIL for
 * the whole call and costs ~1 us of Python per 4 KiB block around ~1.7 us of cipher, so the
 * FUSE read path spent most of its time in a Python loop on one core. One ctypes call per
 * request does the whole run with the GIL released (ctypes drops it for every foreign call),
 * writes the plaintext straight into the caller's buffer (the FUSE reply buffer), and lets
 * requests of different threads decrypt on both cores at once.
 *
 * Loaded with ctypes by adapters/file/native_blocks.py. Built by the Makefile (`make deps`):
 * cc -O2 -shared -fPIC gcm_blocks.c -lcrypto.
 *
 * A keyed template context is made once per file; every call copies it into a context of
 * its own (EVP_CIPHER_CTX_copy only reads the template), so calls from several threads on
 * one file never share mutable state.
 */

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#define BLOCK_SIZE 4096
#define NONCE_LEN 12
#define TAG_LEN 16
#define OVERHEAD (NONCE_LEN + TAG_LEN)
#define RECORD_SIZE (BLOCK_SIZE + OVERHEAD)
#define TAIL_MAX 32

struct ssegw_gcm {
    EVP_CIPHER_CTX *enc; /* keyed templates, never used directly after setup */
    EVP_CIPHER_CTX *dec;
};

/* Bumped whenever a signature changes, so Python refuses a stale build. */
int ssegw_gcm_abi(void)
{
    return 2;
}

void ssegw_gcm_free(struct ssegw_gcm *g)
{
    if (g == NULL)
        return;
    EVP_CIPHER_CTX_free(g->enc); /* frees cleanse the key schedules */
    EVP_CIPHER_CTX_free(g->dec);
    free(g);
}

/* Templates keyed with a 32-byte key; NULL if OpenSSL refuses. */
struct ssegw_gcm *ssegw_gcm_new(const unsigned char *key, int key_len)
{
    struct ssegw_gcm *g;

    if (key_len != 32)
        return NULL;
    g = calloc(1, sizeof(*g));
    if (g == NULL)
        return NULL;
    g->enc = EVP_CIPHER_CTX_new();
    g->dec = EVP_CIPHER_CTX_new();
    if (g->enc == NULL || g->dec == NULL
            || EVP_EncryptInit_ex(g->enc, EVP_aes_256_gcm(), NULL, key, NULL) != 1
            || EVP_DecryptInit_ex(g->dec, EVP_aes_256_gcm(), NULL, key, NULL) != 1) {
        ssegw_gcm_free(g);
        return NULL;
    }
    return g;
}

struct tails {
    const unsigned char *tail, *final_tail; /* after the block number; final_tail: last block */
    size_t len;                              /* both have this length, at most TAIL_MAX */
    int final;                               /* the run's last block is the file's last */
};

/* The associated data of block `block` into aad; its length. */
static int make_aad(unsigned char aad[8 + TAIL_MAX], uint64_t block, const struct tails *t,
                    int last)
{
    int b;

    for (b = 0; b < 8; b++)
        aad[b] = (unsigned char)(block >> (8 * (7 - b)));
    memcpy(aad + 8, last && t->final ? t->final_tail : t->tail, t->len);
    return (int)(8 + t->len);
}

static int is_zero(const unsigned char *p, size_t n)
{
    size_t i;
    unsigned char acc = 0;

    for (i = 0; i < n; i++)
        acc |= p[i];
    return acc == 0;
}

/*
 * Decrypts the records in src[0..src_len) (consecutive blocks from `first`, only the last
 * may be short) into dst, which has room for src_len bytes less 28 per record. An all-zero
 * record that fails authentication is a hole and gives zeros (contentenc.is_hole), except a
 * final block. With `final`, the last record is the file's final block: sealed with
 * final_tail, and it may hold no plaintext (28 bytes).
 * Returns the plaintext length, or -1 with *bad set to the first block that failed
 * authentication or is too short, or -2 if OpenSSL failed (out of memory) or a tail is
 * too long.
 */
long long ssegw_gcm_decrypt(const struct ssegw_gcm *g, uint64_t first, const unsigned char *tail,
                            const unsigned char *final_tail, size_t tail_len, int final,
                            const unsigned char *src, size_t src_len, unsigned char *dst,
                            uint64_t *bad)
{
    const struct tails t = {tail, final_tail, tail_len, final};
    unsigned char aad[8 + TAIL_MAX];
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    size_t off = 0, out = 0;
    uint64_t block = first;
    long long ret = -2;
    int outl;

    if (ctx == NULL || tail_len > TAIL_MAX || EVP_CIPHER_CTX_copy(ctx, g->dec) != 1)
        goto done;
    for (; off < src_len; off += RECORD_SIZE, block++) {
        size_t rec = src_len - off < RECORD_SIZE ? src_len - off : RECORD_SIZE;
        const unsigned char *r = src + off;
        int last = off + rec == src_len;
        int len = (int)(rec - OVERHEAD), ok;

        if (rec < OVERHEAD || (rec == OVERHEAD && !(last && final))) {
            *bad = block;
            ret = -1;
            goto done;
        }
        ok = EVP_DecryptInit_ex(ctx, NULL, NULL, NULL, r) == 1
            && EVP_DecryptUpdate(ctx, NULL, &outl, aad, make_aad(aad, block, &t, last)) == 1
            && (len == 0 || (EVP_DecryptUpdate(ctx, dst + out, &outl, r + NONCE_LEN, len) == 1
                             && outl == len))
            && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, TAG_LEN,
                                   (void *)(r + NONCE_LEN + len)) == 1
            && EVP_DecryptFinal_ex(ctx, dst + out + outl, &outl) == 1;
        if (!ok) {
            if ((last && final) || !is_zero(r, rec)) {
                OPENSSL_cleanse(dst + out, (size_t)len); /* never hand out unauthenticated text */
                *bad = block;
                ret = -1;
                goto done;
            }
            memset(dst + out, 0, (size_t)len);
        }
        out += (size_t)len;
    }
    ret = (long long)out;
done:
    EVP_CIPHER_CTX_free(ctx);
    return ret;
}

/*
 * Encrypts src[0..src_len) as `blocks` records of consecutive blocks from `first` into dst
 * (room for src_len bytes plus 28 per block), with nonces[12 * i] as the nonce of block i
 * (the caller draws them fresh; contentenc.py keeps the seam for known-answer vectors). Only
 * the last block may be short, or empty (a version-2 file's final block, with `final`).
 * Returns the ciphertext length, or -2 if OpenSSL failed or the arguments do not fit.
 */
long long ssegw_gcm_encrypt(const struct ssegw_gcm *g, uint64_t first, const unsigned char *tail,
                            const unsigned char *final_tail, size_t tail_len, int final,
                            const unsigned char *src, size_t src_len, size_t blocks,
                            const unsigned char *nonces, unsigned char *dst)
{
    const struct tails t = {tail, final_tail, tail_len, final};
    unsigned char aad[8 + TAIL_MAX];
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    size_t off = 0, out = 0, i = 0;
    long long ret = -2;
    int outl;

    if (ctx == NULL || tail_len > TAIL_MAX || src_len > blocks * BLOCK_SIZE
            || EVP_CIPHER_CTX_copy(ctx, g->enc) != 1)
        goto done;
    for (; i < blocks; off += BLOCK_SIZE, i++) {
        int len = (int)(src_len - off < BLOCK_SIZE ? src_len - off : BLOCK_SIZE);
        unsigned char *w = dst + out;

        if (off > src_len || (len == 0 && !(final && i + 1 == blocks)))
            goto done;
        memcpy(w, nonces + i * NONCE_LEN, NONCE_LEN);
        if (EVP_EncryptInit_ex(ctx, NULL, NULL, NULL, w) != 1
                || EVP_EncryptUpdate(ctx, NULL, &outl, aad,
                                     make_aad(aad, first + i, &t, i + 1 == blocks)) != 1
                || (len > 0 && (EVP_EncryptUpdate(ctx, w + NONCE_LEN, &outl, src + off, len) != 1
                                || outl != len))
                || EVP_EncryptFinal_ex(ctx, w + NONCE_LEN + len, &outl) != 1
                || EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, TAG_LEN,
                                       w + NONCE_LEN + len) != 1)
            goto done;
        out += (size_t)len + OVERHEAD;
    }
    ret = (long long)out;
done:
    EVP_CIPHER_CTX_free(ctx);
    return ret;
}
