// Room key bundles, opened as pttd.e2ee.keys.open_bundle opens them, and the key authority's
// public key (Ed25519, checked with WebCrypto).
//
// A bundle is BUNDLE_MAGIC || body || signature: `body` canonical JSON, `signature` the Ed25519
// signature of SIGN_CONTEXT || body by the room's key authority. It is checked in pttd's order:
// the signature first (nothing of an unsigned body is read), then the format version, that it
// names this authority, that it is for this identity (its fingerprint) and member name, and only
// then is the epoch secret opened (HPKE, X-Wing, `info` binding room, epoch, suite, name and
// fingerprint). Refusals are Errors whose `reason` is pttd's line (REFUSED_*).

import { b64urlDecode, digitGroups, equalBytes, fromUtf8, utf8 } from "./bytes.js";
import { HPKE_SUITE } from "./identity.js";

export const BUNDLE_MAGIC = utf8("PTTD-RK\x01");
export const SIGN_CONTEXT = utf8("pttd-e2ee-v1 room key bundle\0");
export const AUTHORITY_FINGERPRINT_LABEL = utf8("pttd-e2ee-v1 authority fingerprint\0");
export const VERSION = "pttd-e2ee-v1";
export const HPKE_SUITE_NAME = "MLKEM768_X25519/HKDF_SHA256/AES_128_GCM";
export const HPKE_INFO_LABEL = "pttd-e2ee-v1 epoch secret";
export const MAX_BUNDLE_BYTES = 45 * 1024;
export const SIGNATURE_BYTES = 64;
export const MAX_ROSTER = 1024;
export const MAX_NAME = 64;
export const MAX_EPOCH = 2 ** 32 - 1;
export const EPOCH_SECRET_BYTES = 32;

export const REFUSED_MALFORMED = "malformed room key";
export const REFUSED_VERSION = "room key of an unknown format version";
export const REFUSED_SIGNATURE = "not signed by this room's key authority";
export const REFUSED_OTHER_DEVICE = "wrapped for another device";
export const REFUSED_OTHER_NAME = "wrapped for this device under another name";
export const REFUSED_UNOPENABLE = "cannot be opened with this device's key";

/** A refused room key: `reason` is short, safe to show, and names no secret. */
export class KeyRefused extends Error {
  constructor(reason) {
    super(`room key refused: ${reason}`);
    this.name = "KeyRefused";
    this.reason = reason;
  }
}

// --- the key authority -------------------------------------------------------------------------

/** The 32 bytes of an authority public key's text (base64url, 43 characters), or null. */
export function authorityKeyBytes(text) {
  if (typeof text !== "string" || text.length > 64) return null;
  const bytes = b64urlDecode(text);
  return bytes && bytes.length === 32 ? bytes : null;
}

/** The authority's fingerprint as pttd shows it (AuthorityPublicKey.fingerprint): 30 digits in 6
 *  groups of 5, e.g. "12345 67890 …"; null when `keyText` is not an authority public key. */
export async function authorityFingerprint(keyText) {
  const bytes = authorityKeyBytes(keyText);
  if (!bytes) return null;
  const hashed = new Uint8Array(AUTHORITY_FINGERPRINT_LABEL.length + 32);
  hashed.set(AUTHORITY_FINGERPRINT_LABEL);
  hashed.set(bytes, AUTHORITY_FINGERPRINT_LABEL.length);
  return digitGroups(new Uint8Array(await crypto.subtle.digest("SHA-256", hashed)), 30).join(" ");
}

/** The authority's key for WebCrypto's Ed25519 verify; null when it is not one. */
export async function importAuthorityKey(keyText) {
  const bytes = authorityKeyBytes(keyText);
  if (!bytes) return null;
  try {
    return await crypto.subtle.importKey("raw", bytes, { name: "Ed25519" }, false, ["verify"]);
  } catch {
    return null;
  }
}

// --- names and numbers (pttd.e2ee.keys.check_name and RoomKey) -------------------------------

const NOT_PRINTABLE = /[\p{C}\p{Z}]/u; // Python's str.isprintable: no Cc Cf Cs Co Cn Zl Zp Zs…

export function isName(name) {
  if (typeof name !== "string" || !name) return false;
  if ([...name].length > MAX_NAME) return false;
  if (NOT_PRINTABLE.test(name.replaceAll(" ", "x"))) return false; // … but a space is printable
  return name === name.trim();
}

function isInt(value, low, high) {
  return Number.isSafeInteger(value) && value >= low && value <= high;
}

/** JSON text as Python's json.dumps(..., separators=(",", ":"), ensure_ascii=True) writes it. */
export function pythonAsciiJson(value) {
  return JSON.stringify(value).replace(/[\u007f-\uffff]/g, (c) =>
    c.charCodeAt(0) === 0x7f ? c : "\\u" + c.charCodeAt(0).toString(16).padStart(4, "0"),
  );
}

/** HPKE `info`: pttd.e2ee.keys._hpke_info. */
export function hpkeInfo(room, epoch, suite, name, fingerprintHex) {
  return utf8(pythonAsciiJson([HPKE_INFO_LABEL, room, epoch, suite, name, fingerprintHex]));
}

function field(body, key, kind) {
  const value = body[key];
  const ok =
    kind === "int" ? Number.isSafeInteger(value) : kind === "list" ? Array.isArray(value) : typeof value === kind;
  if (!ok) throw new KeyRefused(REFUSED_MALFORMED);
  return value;
}

/** The bytes of a bundle's base64url text; KeyRefused(malformed) otherwise. */
export function bundleFromText(text) {
  if (typeof text !== "string" || text.length > Math.floor((MAX_BUNDLE_BYTES * 4 + 2) / 3)) {
    throw new KeyRefused(REFUSED_MALFORMED);
  }
  const data = b64urlDecode(text);
  if (!data) throw new KeyRefused(REFUSED_MALFORMED);
  return data;
}

/**
 * The room key in bundle `data` (Uint8Array): {room, epoch, suite, senderIndex, roster: [[index,
 * name]…], name, epochSecret: Uint8Array(32)} (the caller imports the secret and zeroes it).
 * `authorityKey` a CryptoKey from importAuthorityKey, `authorityText` its text, `own` = {digestHex,
 * privateKey} of this identity, `name` this member's name. KeyRefused otherwise.
 */
export async function openBundle(data, authorityKey, authorityText, own, name) {
  if (!(data instanceof Uint8Array)) throw new KeyRefused(REFUSED_MALFORMED);
  if (data.length > MAX_BUNDLE_BYTES || data.length < BUNDLE_MAGIC.length + 2 + SIGNATURE_BYTES) {
    throw new KeyRefused(REFUSED_MALFORMED);
  }
  const magic = data.subarray(0, BUNDLE_MAGIC.length);
  if (!equalBytes(magic, BUNDLE_MAGIC)) {
    if (equalBytes(magic.subarray(0, -1), BUNDLE_MAGIC.subarray(0, -1))) throw new KeyRefused(REFUSED_VERSION);
    throw new KeyRefused(REFUSED_MALFORMED);
  }
  const bodyBytes = data.subarray(BUNDLE_MAGIC.length, data.length - SIGNATURE_BYTES);
  const signature = data.subarray(data.length - SIGNATURE_BYTES);
  const signed = new Uint8Array(SIGN_CONTEXT.length + bodyBytes.length);
  signed.set(SIGN_CONTEXT);
  signed.set(bodyBytes, SIGN_CONTEXT.length);
  let verified = false;
  try {
    verified = await crypto.subtle.verify({ name: "Ed25519" }, authorityKey, signature, signed);
  } catch {
    verified = false;
  }
  if (!verified) throw new KeyRefused(REFUSED_SIGNATURE);

  // Signed by the authority, so canonical JSON it made (pttd also refuses duplicate keys and
  // NaN; neither can be in a body the authority signed).
  const text = fromUtf8(bodyBytes);
  let body;
  try {
    body = text === null ? null : JSON.parse(text);
  } catch {
    body = null;
  }
  if (!body || typeof body !== "object" || Array.isArray(body)) throw new KeyRefused(REFUSED_MALFORMED);
  if (body.v !== 1 || body.scheme !== VERSION || body.hpke !== HPKE_SUITE_NAME) throw new KeyRefused(REFUSED_VERSION);
  if (field(body, "authority", "string") !== authorityText) throw new KeyRefused(REFUSED_SIGNATURE);
  const fingerprintHex = field(body, "recipient_fingerprint", "string");
  if (!equalBytes(utf8(fingerprintHex), utf8(own.digestHex))) throw new KeyRefused(REFUSED_OTHER_DEVICE);
  const recipient = field(body, "recipient", "string");
  if (name !== null && name !== undefined && recipient !== name) throw new KeyRefused(REFUSED_OTHER_NAME);
  const room = field(body, "room", "string");
  const epoch = field(body, "epoch", "int");
  const suite = field(body, "suite", "int");
  const senderIndex = field(body, "sender_index", "int");
  const roster = field(body, "roster", "list");
  const wrapped = b64urlDecode(field(body, "wrapped", "string"));
  if (
    !wrapped ||
    !isName(room) ||
    !isName(recipient) ||
    !isInt(epoch, 1, MAX_EPOCH) ||
    !isInt(suite, 1, 0xffff) ||
    !isInt(senderIndex, 0, 0xffff) ||
    roster.length > MAX_ROSTER
  ) {
    throw new KeyRefused(REFUSED_MALFORMED);
  }
  // The roster: [index, name] pairs sorted by index, no index or name twice, ours among them.
  const names = new Set();
  let previous = -1;
  let ours = null;
  for (const entry of roster) {
    if (!Array.isArray(entry) || entry.length !== 2) throw new KeyRefused(REFUSED_MALFORMED);
    const [index, member] = entry;
    if (!isInt(index, 0, 0xffff) || index <= previous || !isName(member) || names.has(member)) {
      throw new KeyRefused(REFUSED_MALFORMED);
    }
    names.add(member);
    previous = index;
    if (index === senderIndex) ours = member;
  }
  if (ours !== recipient) throw new KeyRefused(REFUSED_MALFORMED);

  const info = hpkeInfo(room, epoch, suite, recipient, fingerprintHex);
  const enc = HPKE_SUITE.kem.encSize;
  let secret;
  try {
    if (wrapped.length <= enc) throw new Error("short");
    const ctx = await HPKE_SUITE.createRecipientContext({
      recipientKey: own.privateKey,
      enc: wrapped.slice(0, enc).buffer,
      info: info.buffer,
    });
    secret = new Uint8Array(await ctx.open(wrapped.slice(enc).buffer));
  } catch {
    throw new KeyRefused(REFUSED_UNOPENABLE);
  }
  if (secret.length !== EPOCH_SECRET_BYTES) {
    secret.fill(0);
    throw new KeyRefused(REFUSED_MALFORMED);
  }
  return { room, epoch, suite, senderIndex, roster: roster.map(([i, n]) => [i, n]), name: recipient, epochSecret: secret };
}
