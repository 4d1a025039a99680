// The entry point of device/pttd/web/vendor/hpke-xwing.js: HPKE (RFC 9180) with the X-Wing KEM,
// which is what pttd's HPKE_SUITE (MLKEM768_X25519, HKDF_SHA256, AES_128_GCM) is.
// Only what device/pttd/web/e2ee/ uses is exported.
export { Aes128Gcm, CipherSuite, HkdfSha256 } from "@hpke/core";
export { XWing } from "@hpke/hybridkem-x-wing";
