/* OpenSSL's libcrypto (EVP digests, base64) through the lazily loaded table; see dynlib.h. */
#ifndef MYRMEX_CRYPTO_API_H
#define MYRMEX_CRYPTO_API_H

#include <openssl/evp.h>

#include "dynlib.h"

// clang-format off
#define MX_CRYPTO_FUNCS(X) \
  X(EVP_DecodeBlock) X(EVP_EncodeBlock) X(EVP_DigestFinal_ex) X(EVP_DigestInit_ex) X(EVP_DigestUpdate)            \
  X(EVP_MD_CTX_free) X(EVP_MD_CTX_get0_md) X(EVP_MD_CTX_new) X(EVP_MD_get0_name)               \
  X(EVP_get_digestbyname) X(EVP_sha256) X(EVP_sha512)
// clang-format on

struct mx_crypto_api {
#define MX_FIELD(f) __typeof__(f) *f;
  MX_CRYPTO_FUNCS(MX_FIELD)
#undef MX_FIELD
};
extern struct mx_crypto_api mx_crypto;

#ifndef MX_DYNLIB_IMPL
#define EVP_MD_CTX_new (*mx_crypto.EVP_MD_CTX_new)
#define EVP_MD_CTX_free (*mx_crypto.EVP_MD_CTX_free)
#define EVP_MD_CTX_get0_md (*mx_crypto.EVP_MD_CTX_get0_md)
#define EVP_MD_get0_name (*mx_crypto.EVP_MD_get0_name)
#define EVP_get_digestbyname (*mx_crypto.EVP_get_digestbyname)
#define EVP_sha256 (*mx_crypto.EVP_sha256)
#define EVP_sha512 (*mx_crypto.EVP_sha512)
#define EVP_DigestInit_ex (*mx_crypto.EVP_DigestInit_ex)
#define EVP_DigestUpdate (*mx_crypto.EVP_DigestUpdate)
#define EVP_DigestFinal_ex (*mx_crypto.EVP_DigestFinal_ex)
#define EVP_DecodeBlock (*mx_crypto.EVP_DecodeBlock)
#define EVP_EncodeBlock (*mx_crypto.EVP_EncodeBlock)
#endif

#endif
