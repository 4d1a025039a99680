// SFrame (RFC 9605) in the browser, on WebCrypto alone: the same packets as pttd.e2ee.sframe.
//
// A ciphertext is `header + AEAD(plaintext) + tag`. The header carries the key id (KID) and the
// counter (CTR), minimally encoded (§4.3); a KID's key and salt come from its base key by HKDF
// (§4.4.2), the nonce is `salt XOR CTR` (§4.4.3) and the AAD is the header and the caller's
// metadata (authenticated, never sent).
//
// Suites (§8.1), all five as pttd has them:
//   1-3  AES_128_CTR_HMAC_SHA256_80/_64/_32: WebCrypto AES-CTR, then HMAC-SHA256 truncated to
//        10, 8 or 4 bytes (§4.5.1), compared here in constant time;
//   4    AES_128_GCM_SHA256_128, 5 AES_256_GCM_SHA512_128: WebCrypto AES-GCM.
// HKDF-Extract with the empty salt is WebCrypto's HKDF with an empty salt (RFC 5869: an empty
// salt is HashLen zero bytes, which HMAC pads to the same key).
//
// Every CryptoKey here is imported non-extractable. The derived key bytes exist in JavaScript
// memory for the moment of the import (WebCrypto cannot split one HKDF output into an AES and an
// HMAC key) and are zeroed right after.
//
// Counters and KIDs are BigInts (64 bits); a Sender never uses one counter twice, a Receiver keeps
// a replay window per KID (as pttd's: the highest counter accepted and a bitmap of the
// `replayWindow` below it), moved only after a packet's tag verified.

import { concat, equalBytes, toBytes } from "./bytes.js";

export const MAX_U64 = (1n << 64n) - 1n;
export const DEFAULT_SUITE = 1;
export const DEFAULT_REPLAY_WINDOW = 256;

const subtle = globalThis.crypto.subtle;
const KEY_LABEL = new TextEncoder().encode("SFrame 1.0 Secret key ");
const SALT_LABEL = new TextEncoder().encode("SFrame 1.0 Secret salt ");
const EMPTY = new Uint8Array(0);

/** RFC 9605 Table 1: nh (hash size), nka (AES key share of a CTR+HMAC key, 0: GCM), nk, nn, nt. */
export const SUITES = Object.freeze({
  1: Object.freeze({ name: "AES_128_CTR_HMAC_SHA256_80", hash: "SHA-256", nh: 32, nka: 16, nk: 48, nn: 12, nt: 10 }),
  2: Object.freeze({ name: "AES_128_CTR_HMAC_SHA256_64", hash: "SHA-256", nh: 32, nka: 16, nk: 48, nn: 12, nt: 8 }),
  3: Object.freeze({ name: "AES_128_CTR_HMAC_SHA256_32", hash: "SHA-256", nh: 32, nka: 16, nk: 48, nn: 12, nt: 4 }),
  4: Object.freeze({ name: "AES_128_GCM_SHA256_128", hash: "SHA-256", nh: 32, nka: 0, nk: 16, nn: 12, nt: 16 }),
  5: Object.freeze({ name: "AES_256_GCM_SHA512_128", hash: "SHA-512", nh: 64, nka: 0, nk: 32, nn: 12, nt: 16 }),
});

export class SFrameError extends Error {
  constructor(message, kind) {
    super(message);
    this.name = "SFrameError";
    this.kind = kind; // "malformed" | "unknown-key" | "auth" | "replay" | "exhausted" | "argument"
  }
}

function params(suite) {
  const p = SUITES[suite];
  if (!p) throw new SFrameError(`unknown SFrame cipher suite ${suite}`, "argument");
  return p;
}

function u64(value, what) {
  const v = BigInt(value);
  if (v < 0n || v > MAX_U64) throw new SFrameError(`SFrame ${what} ${v} is out of range 0 … 2**64 - 1`, "argument");
  return v;
}

function bigBytes(value, size) {
  const out = new Uint8Array(size);
  let v = value;
  for (let i = size - 1; i >= 0; i--) {
    out[i] = Number(v & 0xffn);
    v >>= 8n;
  }
  return out;
}

function byteSize(value) {
  let size = 0;
  for (let v = value; v > 0n; v >>= 8n) size++;
  return size;
}

function readBig(bytes, start, end) {
  let v = 0n;
  for (let i = start; i < end; i++) v = (v << 8n) | BigInt(bytes[i]);
  return v;
}

// --- header (§4.3) -------------------------------------------------------------------------------

/** The minimally encoded SFrame header of `kid` and `ctr` (numbers or BigInts, 0 … 2**64 - 1). */
export function encodeHeader(kid, ctr) {
  const k = u64(kid, "KID");
  const c = u64(ctr, "counter");
  let config = 0;
  const parts = [];
  if (k < 8n) {
    config |= Number(k) << 4;
  } else {
    const size = byteSize(k);
    config |= 0x80 | ((size - 1) << 4);
    parts.push(bigBytes(k, size));
  }
  if (c < 8n) {
    config |= Number(c);
  } else {
    const size = byteSize(c);
    config |= 0x08 | (size - 1);
    parts.push(bigBytes(c, size));
  }
  return concat(Uint8Array.of(config), ...parts);
}

/** {kid, ctr, length} of the header at the start of `data`; SFrameError("malformed") when it is
 *  truncated or not minimally encoded (each (KID, CTR) has exactly one header). */
export function decodeHeader(data) {
  const b = toBytes(data);
  if (!b.length) throw new SFrameError("empty SFrame packet", "malformed");
  const config = b[0];
  const kidSize = config & 0x80 ? ((config >> 4) & 7) + 1 : 0;
  const ctrSize = config & 0x08 ? (config & 7) + 1 : 0;
  const end = 1 + kidSize + ctrSize;
  if (b.length < end) {
    throw new SFrameError(`truncated SFrame header: ${b.length} bytes, its config byte announces ${end}`, "malformed");
  }
  const smallest = (size) => (size === 1 ? 8n : 1n << BigInt(8 * (size - 1)));
  let kid = BigInt((config >> 4) & 7);
  if (kidSize) {
    kid = readBig(b, 1, 1 + kidSize);
    if (kid < smallest(kidSize)) throw new SFrameError(`SFrame header with KID ${kid} not minimally encoded`, "malformed");
  }
  let ctr = BigInt(config & 7);
  if (ctrSize) {
    ctr = readBig(b, 1 + kidSize, end);
    if (ctr < smallest(ctrSize)) throw new SFrameError(`SFrame header with counter ${ctr} not minimally encoded`, "malformed");
  }
  return { kid, ctr, length: end };
}

// --- keys (§4.4.2) -------------------------------------------------------------------------------

/** A base key (raw bytes) as a non-extractable HKDF CryptoKey. */
export function importBaseKey(bytes) {
  return subtle.importKey("raw", toBytes(bytes), "HKDF", false, ["deriveBits"]);
}

/** `{key, salt}` (raw bytes, Nk and Nn long) of `kid` under `baseKey` (an HKDF CryptoKey). */
export async function deriveKeySalt(suite, kid, baseKey) {
  const p = params(suite);
  const tail = concat(bigBytes(u64(kid, "KID"), 8), bigBytes(BigInt(suite), 2));
  const hkdf = (label, size) =>
    subtle.deriveBits({ name: "HKDF", hash: p.hash, salt: EMPTY, info: concat(label, tail) }, baseKey, size * 8);
  const [key, salt] = await Promise.all([hkdf(KEY_LABEL, p.nk), hkdf(SALT_LABEL, p.nn)]);
  return { key: new Uint8Array(key), salt: new Uint8Array(salt) };
}

/** One (sframe_key, sframe_salt) as WebCrypto keys, sealing and opening packets. */
export class Keyed {
  static async create(suite, keyBytes, saltBytes) {
    const p = params(suite);
    const key = toBytes(keyBytes);
    if (key.length !== p.nk) throw new SFrameError(`${p.name} needs a ${p.nk}-byte key, not ${key.length} bytes`, "argument");
    if (toBytes(saltBytes).length !== p.nn) throw new SFrameError(`${p.name} needs a ${p.nn}-byte salt`, "argument");
    let aes;
    let mac = null;
    if (p.nka) {
      // derive_subkeys: the AES key is the first Nka bytes, the HMAC key the other Nh.
      aes = await subtle.importKey("raw", key.subarray(0, p.nka), "AES-CTR", false, ["encrypt"]);
      mac = await subtle.importKey("raw", key.subarray(p.nka), { name: "HMAC", hash: p.hash }, false, ["sign"]);
    } else {
      aes = await subtle.importKey("raw", key, "AES-GCM", false, ["encrypt", "decrypt"]);
    }
    return new Keyed(suite, p, aes, mac, readBig(toBytes(saltBytes), 0, p.nn));
  }

  /** From a base key (HKDF CryptoKey): derives, imports, zeroes the derived bytes. */
  static async fromBaseKey(suite, kid, baseKey) {
    const { key, salt } = await deriveKeySalt(suite, kid, baseKey);
    try {
      return await Keyed.create(suite, key, salt);
    } finally {
      key.fill(0);
    }
  }

  constructor(suite, p, aes, mac, salt) {
    this.suite = suite;
    this._p = p;
    this._aes = aes;
    this._mac = mac;
    this._salt = salt;
  }

  nonce(ctr) {
    return bigBytes(this._salt ^ BigInt(ctr), this._p.nn);
  }

  async _tag(nonce, aad, ct) {
    const p = this._p;
    const prefix = concat(bigBytes(BigInt(aad.length), 8), bigBytes(BigInt(ct.length), 8), bigBytes(BigInt(p.nt), 8), nonce);
    const full = await subtle.sign("HMAC", this._mac, concat(prefix, aad, ct));
    return new Uint8Array(full, 0, p.nt);
  }

  _ctr(nonce, data) {
    // The counter block is nonce + 4 zero bytes, all 128 bits counting (as `cryptography`'s CTR).
    return subtle.encrypt({ name: "AES-CTR", counter: concat(nonce, new Uint8Array(4)), length: 128 }, this._aes, data);
  }

  /** The AEAD alone (RFC 9605 §4.5.1; the C.2 vectors): ciphertext + tag. */
  async aeadEncrypt(nonce, aad, plaintext) {
    if (!this._mac) {
      return new Uint8Array(await subtle.encrypt({ name: "AES-GCM", iv: nonce, additionalData: aad, tagLength: 128 }, this._aes, plaintext));
    }
    const ct = new Uint8Array(await this._ctr(nonce, plaintext));
    return concat(ct, await this._tag(nonce, aad, ct));
  }

  async aeadDecrypt(nonce, aad, ciphertext) {
    const nt = this._p.nt;
    if (ciphertext.length < nt) throw new SFrameError("SFrame ciphertext shorter than its tag", "malformed");
    if (!this._mac) {
      try {
        return new Uint8Array(await subtle.decrypt({ name: "AES-GCM", iv: nonce, additionalData: aad, tagLength: 128 }, this._aes, ciphertext));
      } catch {
        throw new SFrameError("SFrame tag mismatch", "auth");
      }
    }
    const ct = ciphertext.subarray(0, ciphertext.length - nt);
    if (!equalBytes(await this._tag(nonce, aad, ct), ciphertext.subarray(ciphertext.length - nt))) {
      throw new SFrameError("SFrame tag mismatch", "auth");
    }
    return new Uint8Array(await this._ctr(nonce, ct));
  }

  /** `header + ciphertext + tag` of `plaintext` under KID `kid`, counter `ctr`. */
  async seal(kid, ctr, metadata, plaintext) {
    const header = encodeHeader(kid, ctr);
    const body = await this.aeadEncrypt(this.nonce(ctr), concat(header, metadata), toBytes(plaintext));
    return concat(header, body);
  }

  /** The plaintext of `packet` whose header (decodeHeader) is `h`. */
  async open(packet, h, metadata) {
    const b = toBytes(packet);
    if (b.length - this._p.nt < h.length) {
      throw new SFrameError(
        `SFrame packet of ${b.length} bytes too short for its ${h.length}-byte header and ${this._p.nt}-byte tag`,
        "malformed",
      );
    }
    const aad = concat(b.subarray(0, h.length), metadata);
    try {
      return await this.aeadDecrypt(this.nonce(h.ctr), aad, b.subarray(h.length));
    } catch (e) {
      if (e instanceof SFrameError && e.kind === "auth") {
        throw new SFrameError(`SFrame tag mismatch for KID ${h.kid} counter ${h.ctr} (tampered, wrong key or metadata)`, "auth");
      }
      throw e;
    }
  }
}

// --- sender and receiver -----------------------------------------------------------------------

/** Seals one stream under one KID, counting up from `firstCounter`; never one counter twice. */
export class Sender {
  constructor(keyed, kid, firstCounter) {
    this.keyed = keyed;
    this.kid = BigInt(kid);
    this.next = u64(firstCounter, "first counter");
  }

  async seal(plaintext, metadata) {
    const ctr = this.next;
    if (ctr > MAX_U64) throw new SFrameError(`SFrame sender for KID ${this.kid} has used its last counter: it needs a new key`, "exhausted");
    this.next = ctr + 1n; // taken before the first await: a counter is never used twice
    return this.keyed.seal(this.kid, ctr, metadata, plaintext);
  }
}

/** Opens the packets of the KIDs it has keys for, refusing replays (a sliding window per KID). */
export class Receiver {
  constructor(suite, replayWindow = DEFAULT_REPLAY_WINDOW) {
    params(suite);
    this.suite = suite;
    this.replayWindow = BigInt(replayWindow);
    this._mask = (1n << (this.replayWindow + 1n)) - 1n;
    this._keys = new Map(); // kid (BigInt) -> {make, keyed: Promise<Keyed> | null, token, highest, seen}
  }

  /** Accept `kid`, its Keyed made by `makeKeyed()` (a Promise) when its first packet comes;
   *  `token` names the key: the same token again changes nothing (the replay window stays),
   *  another one starts a fresh window. */
  addKey(kid, token, makeKeyed) {
    const k = BigInt(kid);
    const old = this._keys.get(k);
    if (old && old.token === token) return;
    this._keys.set(k, { make: makeKeyed, keyed: null, token, highest: -1n, seen: 0n });
  }

  removeKey(kid) {
    this._keys.delete(BigInt(kid));
  }

  kids() {
    return [...this._keys.keys()];
  }

  _check(inbound, kid, ctr) {
    const behind = inbound.highest - ctr;
    if (behind >= 0n) {
      if (behind > this.replayWindow) {
        throw new SFrameError(
          `SFrame counter ${ctr} of KID ${kid} is older than the replay window (${this.replayWindow} below ${inbound.highest})`,
          "replay",
        );
      }
      if ((inbound.seen >> behind) & 1n) throw new SFrameError(`SFrame counter ${ctr} of KID ${kid} was already received`, "replay");
    }
    return behind;
  }

  /** {kid, ctr, plaintext} of `packet`; SFrameError (kind malformed, unknown-key, replay, auth). */
  async open(packet, metadata) {
    const b = toBytes(packet);
    const h = decodeHeader(b);
    const inbound = this._keys.get(h.kid);
    if (!inbound) throw new SFrameError(`no SFrame key for KID ${h.kid}`, "unknown-key");
    this._check(inbound, h.kid, h.ctr);
    if (!inbound.keyed) {
      inbound.keyed = inbound.make();
      inbound.keyed.catch(() => (inbound.keyed = null)); // tried again with the next packet
    }
    const plaintext = await (await inbound.keyed).open(b, h, metadata);
    // Checked again: another open of the same counter may have finished while this one waited.
    const behind = this._check(inbound, h.kid, h.ctr);
    if (behind < 0n) {
      const ahead = -behind;
      inbound.seen = ahead <= this.replayWindow ? ((inbound.seen << ahead) | 1n) & this._mask : 1n;
      inbound.highest = h.ctr;
    } else {
      inbound.seen |= 1n << behind;
    }
    return { kid: h.kid, ctr: h.ctr, plaintext };
  }
}
