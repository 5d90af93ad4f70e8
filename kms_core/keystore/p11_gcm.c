/*
 * One AES-GCM encryption or decryption inside a PKCS#11 token: C_EncryptInit + C_Encrypt (or
 * the Decrypt pair) with a CK_GCM_PARAMS, in one foreign call.
 *
 * Why: python-pkcs11 spends ~4 us of Python and Cython around each such call (an operation
 * object, a mechanism object, a size query, locks) against ~14 us that SoftHSM2 itself takes,
 * and the KMS makes one per data key under an HSM key. This file decides nothing: the session
 * and key handles are python-pkcs11's own (the same process, the same loaded module, already
 * initialised and logged in by it), every return value goes back to Python, which maps it to
 * python-pkcs11's exception for that code, and the Python path stays what serves everything
 * else (kms_core/keystore/p11_native.py).
 *
 * The module is reached through its C_GetFunctionList, the one entry point PKCS#11 requires a
 * module to export. The types below are PKCS#11 v2.40's (unpacked structs, CK_ULONG = unsigned
 * long on Unix), declared here so the build needs no PKCS#11 headers.
 *
 * Built by the Makefile (`make deps`): cc -O2 -shared -fPIC p11_gcm.c -ldl.
 */

#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>

typedef unsigned long CK_ULONG;
typedef CK_ULONG CK_RV;
typedef unsigned char CK_BYTE;

#define CKR_OK 0x0UL
#define CKR_FUNCTION_FAILED 0x6UL
#define CKR_BUFFER_TOO_SMALL 0x150UL
#define CKM_AES_GCM 0x1087UL
#define TAG_BITS 128UL

typedef struct {
    CK_ULONG mechanism;
    void *pParameter;
    CK_ULONG ulParameterLen;
} CK_MECHANISM;

typedef struct {
    CK_BYTE *pIv;
    CK_ULONG ulIvLen;
    CK_ULONG ulIvBits;
    CK_BYTE *pAAD;
    CK_ULONG ulAADLen;
    CK_ULONG ulTagBits;
} CK_GCM_PARAMS;

typedef CK_RV (*init_fn)(CK_ULONG session, CK_MECHANISM *mechanism, CK_ULONG key);
typedef CK_RV (*crypt_fn)(CK_ULONG session, CK_BYTE *in, CK_ULONG in_len, CK_BYTE *out,
                          CK_ULONG *out_len);
typedef void (*any_fn)(void);

/* CK_FUNCTION_LIST up to C_Decrypt, in the standard's order. */
struct function_list {
    struct {
        CK_BYTE major, minor;
    } version;
    any_fn before_encrypt[29]; /* C_Initialize ... C_FindObjectsFinal */
    init_fn C_EncryptInit;
    crypt_fn C_Encrypt;
    any_fn C_EncryptUpdate, C_EncryptFinal;
    init_fn C_DecryptInit;
    crypt_fn C_Decrypt;
};

typedef CK_RV (*get_function_list_fn)(struct function_list **list);

/* Bumped whenever a signature changes (see p11_native.py). */
int ssegw_p11_abi(void)
{
    return 1;
}

/*
 * The function list of `module`, which must already be loaded in this process (python-pkcs11
 * loaded and initialised it); NULL otherwise. Index 3 of the list is C_GetFunctionList itself,
 * which checks that the layout above is the module's.
 */
const struct function_list *ssegw_p11_functions(const char *module)
{
    void *handle = dlopen(module, RTLD_NOW | RTLD_NOLOAD);
    get_function_list_fn get;
    struct function_list *list = NULL;
    void *exported_init;

    if (handle == NULL)
        return NULL;
    get = (get_function_list_fn)dlsym(handle, "C_GetFunctionList");
    /* Modules usually export every function as well: where this one does, it must be the
     * list's entry, another check of the layout. */
    exported_init = dlsym(handle, "C_EncryptInit");
    /* dlopen counted one more reference; the module stays loaded by python-pkcs11's. */
    dlclose(handle);
    if (get == NULL || get(&list) != CKR_OK || list == NULL)
        return NULL;
    if ((void *)list->before_encrypt[3] != (void *)get)
        return NULL;
    if (!list->C_EncryptInit || !list->C_Encrypt || !list->C_DecryptInit || !list->C_Decrypt)
        return NULL;
    if (exported_init != NULL && exported_init != (void *)list->C_EncryptInit)
        return NULL;
    return list;
}

/*
 * AES-GCM with a 128-bit tag under `key`: encrypt (out gets ciphertext || tag, room for
 * in_len + 16) or decrypt (out gets the plaintext, room for in_len). *out_len: the room on
 * entry, the bytes written on return. Returns the module's CK_RV.
 */
CK_RV ssegw_p11_gcm(const struct function_list *f, int encrypt, CK_ULONG session, CK_ULONG key,
                    const CK_BYTE *iv, CK_ULONG iv_len, const CK_BYTE *aad, CK_ULONG aad_len,
                    const CK_BYTE *in, CK_ULONG in_len, CK_BYTE *out, CK_ULONG *out_len)
{
    CK_GCM_PARAMS gcm = {(CK_BYTE *)iv, iv_len, iv_len * 8, (CK_BYTE *)aad, aad_len, TAG_BITS};
    CK_MECHANISM mechanism = {CKM_AES_GCM, &gcm, sizeof(gcm)};
    crypt_fn run = encrypt ? f->C_Encrypt : f->C_Decrypt;
    CK_ULONG room = *out_len;
    CK_RV rv = (encrypt ? f->C_EncryptInit : f->C_DecryptInit)(session, &mechanism, key);

    if (rv != CKR_OK)
        return rv;
    rv = run(session, (CK_BYTE *)in, in_len, out, out_len);
    if (rv == CKR_BUFFER_TOO_SMALL) {
        /* The caller's room is always enough, but a module may ask for more: the operation
         * stays active after this code, and would refuse every later Init on this session.
         * Finish it into a buffer of the size asked for, and report the failure. */
        CK_ULONG need = *out_len > room ? *out_len : room + 16;
        CK_BYTE *spare = malloc(need);

        if (spare == NULL)
            return CKR_BUFFER_TOO_SMALL;
        *out_len = need;
        run(session, (CK_BYTE *)in, in_len, spare, out_len);
        explicit_bzero(spare, need);
        free(spare);
        *out_len = 0;
        return CKR_BUFFER_TOO_SMALL;
    }
    if (rv != CKR_OK)
        *out_len = 0;
    return rv;
}
