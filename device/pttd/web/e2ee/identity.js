// The browser's identity key: an X-Wing key pair (ML-KEM-768 + X25519, pttd's HPKE KEM
// MLKEM768_X25519) made from a 32-byte seed, exactly as a device makes its own
// (pttd.e2ee.keys.IdentityKey.from_seed), so that the admin approves it the same way:
// `pttd keys approve NAME <the 40 digits>` or the web console.
//
// Why the seed is not a CryptoKey: WebCrypto has no ML-KEM, so the X-Wing private key lives in
// JavaScript memory (the vendored @hpke/hybridkem-x-wing holds it), never as a non-extractable
// CryptoKey; only the symmetric keys made from it (SFrame AES and HMAC keys) are. What this module
// can do it does: the seed is never on the Identity object the page gets (it sits in a WeakMap
// here), it is zeroed when the identity is forgotten, and it is written to IndexedDB only when
// the user chose "keep this browser approved". (Wrapping it under a non-extractable AES key kept
// in the same IndexedDB would add nothing: whoever can read the one can use the other.)
//
// Lifetimes (`user` is the name the page logged in as; everything kept is kept under it, see
// store.js, and one user's login never sees, takes or deletes another user's kept identity):
//   loadIdentity({persist: true, user})  the user's identity in IndexedDB (made and stored on
//                                  first use); it survives reloads and logouts until
//                                  forgetIdentity(user).
//   loadIdentity({persist: false, user}) an identity in this page's memory only: gone at reload,
//                                  and at logout (the page calls forgetIdentity(user)). The
//                                  user's stored one, if any, is taken out of IndexedDB and used
//                                  for this page only.
//   closeIdentity()                a logout that keeps the identity: out of this page's memory,
//                                  still in IndexedDB for the next login of that user.
// A load for another user than the identity in memory closes that one first: the next user on
// the same browser gets their own (kept or new) identity, never the one before.
//
// Counter generations: each sender counts from `generation << 40` (pttd.e2ee.keyring), and a
// counter must never repeat under one key. A kept identity does as a device does: the generation
// is taken from IndexedDB and incremented there, in one transaction, before use (every page load
// gets a new one, two tabs included). A memory-only identity is new for this page, so it has
// never sent under any key (a new key gets a new sender index from the authority, hence new key
// ids); its generation is random, and senders carry on across RoomKeys instances (see index.js).

import { CipherSuite, HkdfSha256, Aes128Gcm, XWing } from "../vendor/hpke-xwing.js";
import { b64urlEncode, digitGroups, toHex } from "./bytes.js";
import * as store from "./store.js";

export const IDENTITY_TAG = 0x01;
export const SEED_BYTES = 32;
export const PUBLIC_BYTES = 1216; // ML-KEM-768 public key (1184) || X25519 public key (32)
export const FINGERPRINT_LABEL = new TextEncoder().encode("pttd-e2ee-v1 identity fingerprint\0");
export const GENERATION_SHIFT = 40n;
export const MAX_GENERATION = 2 ** 24 - 1;

/** pttd's HPKE_SUITE: X-Wing, HKDF-SHA256, AES-128-GCM. */
export const HPKE_SUITE = new CipherSuite({ kem: new XWing(), kdf: new HkdfSha256(), aead: new Aes128Gcm() });

const secrets = new WeakMap(); // Identity -> {user, seed, privateKey, digest, generation, senders, floors, pin}
let current = null; // the Identity of this page, once loaded (of one user)

/** The public fields of the identity of `seed` (32 bytes): {keyText, fingerprint, groups,
 *  digits, digest (hex)} and the X-Wing private key. Exported for the tests. */
export async function deriveIdentity(seed) {
  if (!(seed instanceof Uint8Array) || seed.length !== SEED_BYTES) {
    throw new Error(`an identity seed is ${SEED_BYTES} bytes`);
  }
  const own = new Uint8Array(seed); // its own buffer: the library keeps a view of it
  const pair = await HPKE_SUITE.kem.generateKeyPairDerand(own);
  const pub = new Uint8Array(await HPKE_SUITE.kem.serializePublicKey(pair.publicKey));
  if (pub.length !== PUBLIC_BYTES) throw new Error("X-Wing public key of an unexpected size");
  const publicBytes = new Uint8Array(1 + PUBLIC_BYTES);
  publicBytes[0] = IDENTITY_TAG;
  publicBytes.set(pub, 1);
  const label = FINGERPRINT_LABEL;
  const hashed = new Uint8Array(label.length + publicBytes.length);
  hashed.set(label);
  hashed.set(publicBytes, label.length);
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", hashed));
  const groups = digitGroups(digest, 40);
  return {
    keyText: b64urlEncode(publicBytes),
    fingerprint: groups.join(" "),
    groups,
    digits: groups.join(""),
    digest: toHex(digest),
    privateKey: pair.privateKey,
    seed: own,
  };
}

async function make(user, seed, persisted, state) {
  const d = await deriveIdentity(seed);
  const identity = Object.freeze({
    user, // whose identity it is (the name logged in as)
    keyText: d.keyText, // what the logon sends as identity_key
    fingerprint: d.fingerprint, // "12345 67890 …": 40 digits in 8 groups of 5, as pttd shows it
    groups: Object.freeze(d.groups),
    digits: d.digits,
    qrText: "pttd-fp:" + d.digest,
    persisted,
  });
  secrets.set(
    identity,
    state || {
      user,
      seed: d.seed,
      privateKey: d.privateKey,
      digestHex: d.digest,
      generation: 0, // set by the caller
      senders: new Map(), // "room\0kid" -> the next counter (BigInt) of that sender in this page
      floors: null, // room -> highest epoch accepted (loaded lazily; in IndexedDB when kept)
      pin: null, // the key authority pinned for this page when nothing is kept
      forgotten: false,
    },
  );
  return identity;
}

function randomSeed() {
  return crypto.getRandomValues(new Uint8Array(SEED_BYTES));
}

function randomGeneration() {
  // At most 2**23: an identity kept later still has 2**23 page loads of generations left.
  const [n] = crypto.getRandomValues(new Uint32Array(1));
  return (n % 2 ** 23) + 1;
}

function validRecord(rec, user) {
  return Boolean(
    rec &&
      rec.user === user &&
      rec.seed instanceof Uint8Array &&
      rec.seed.length === SEED_BYTES &&
      Number.isInteger(rec.generation),
  );
}

/** `user`'s stored identity with its generation incremented (one readwrite transaction): the
 *  page's generation, never handed out before. One is made and stored when there is none. */
async function takeStored(user) {
  return store.userStore(user).transact("readwrite", async (st, done) => {
    let rec = await store.get(st, "identity");
    if (!validRecord(rec, user)) rec = { user, seed: randomSeed(), generation: 0, created: Date.now() };
    if (!(rec.generation >= 0 && rec.generation < MAX_GENERATION)) {
      throw new Error("this browser's identity has used all its counter generations: forget it and get approved again");
    }
    rec.generation += 1;
    st.put(rec, "identity");
    done(rec);
  });
}

/** Store `user`'s `seed` whose page uses `generation`: the next page load gets a higher one. */
async function storeSeed(user, seed, generation) {
  await store.userStore(user).transact("readwrite", async (st) => {
    const rec = await store.get(st, "identity");
    const same = validRecord(rec, user) && rec.seed.every((x, i) => x === seed[i]);
    const created = same ? rec.created : Date.now();
    st.put(
      { user, seed: new Uint8Array(seed), generation: Math.max(same ? rec.generation : 0, generation), created },
      "identity",
    );
  });
}

function checkUser(user) {
  if (typeof user !== "string" || !user) throw new Error("an identity belongs to a user: name the user logged in");
  return user;
}

/** The identity of `user` in this browser (see the module's comment): {user, keyText,
 *  fingerprint, groups, digits, qrText, persisted}. The same object for the rest of the page
 *  while the user and `persist` do not change; when `persist` changes, the same key (and its
 *  counters) with the new lifetime. */
export function loadIdentity({ persist = false, user } = {}) {
  return serially(async () => load(Boolean(persist), checkUser(user)));
}

let queue = Promise.resolve();

function serially(fn) {
  // One load or forget at a time: two calls at once must not make two identities.
  const run = queue.then(fn);
  queue = run.catch(() => undefined);
  return run;
}

async function load(keep, user) {
  await store.dropUnbound();
  if (current && current.user !== user) close(); // another user: never the one before
  const kept = store.userStore(user);
  if (current && current.persisted === keep) return current;
  if (current) {
    const state = secretOf(current);
    if (keep) {
      await storeSeed(user, state.seed, state.generation);
      if (state.floors) await kept.write("floors", { rooms: Object.fromEntries(state.floors) });
      if (state.pin !== null) await kept.write("authority", { key: state.pin, pinned: Date.now() });
    } else {
      state.pin = await storedPin(user);
      await kept.clear();
    }
    current = await make(user, state.seed, keep, state);
    return current;
  }
  let rec = null;
  const stored = await kept.read("identity").catch(() => undefined);
  if (keep || validRecord(stored, user)) rec = await takeStored(user);
  const pin = !keep && rec ? await storedPin(user) : null;
  if (!keep) await kept.clear(); // not kept: nothing of this user's stays in this browser's storage
  const seed = rec ? new Uint8Array(rec.seed) : randomSeed();
  const identity = await make(user, seed, keep, null);
  const state = secrets.get(identity);
  // A stored identity used memory-only takes the next stored generation (its earlier pages had
  // the ones before) and keeps the authority it pinned, for this page; a new one, never used
  // anywhere, a random generation.
  state.generation = rec ? rec.generation : randomGeneration();
  state.pin = pin;
  current = identity;
  return identity;
}

/** The identity in memory (if any) out of it, its seed zeroed; nothing stored is touched. */
function close() {
  if (!current) return;
  const state = secrets.get(current);
  if (state) {
    state.seed.fill(0);
    state.forgotten = true;
    state.privateKey = null;
    state.senders.clear();
    state.pin = null;
  }
  current = null;
}

/** A logout that keeps the identity (see the module's comment): out of this page's memory, kept
 *  in IndexedDB for that user's next login. */
export function closeIdentity() {
  return serially(async () => close());
}

/** Forget `user`'s identity: out of memory (its seed zeroed) and out of IndexedDB, with the
 *  pinned key authority and the epoch floors. The next loadIdentity of that user makes a new
 *  one, to be approved. Another user's kept identity is not touched. */
export function forgetIdentity(user) {
  return serially(async () => forget(checkUser(user)));
}

async function forget(user) {
  if (current && current.user === user) close();
  await store.userStore(user).clear();
}

/** The private state of `identity` (for index.js); an Error when it was forgotten. */
export function secretOf(identity) {
  const s = secrets.get(identity);
  if (!s || s.forgotten) throw new Error("this identity was forgotten: load it again");
  return s;
}

/** The authority `user`'s kept identity pinned, if any. */
async function storedPin(user) {
  const rec = await store.userStore(user).read("authority").catch(() => undefined);
  return rec && typeof rec.key === "string" ? rec.key : null;
}

/** Pin `keyText` (trust on first use): in IndexedDB for a kept identity, in memory otherwise.
 *  Resolves with the pinned key, which may be another one pinned before. */
export async function pinAuthority(identity, keyText) {
  const s = secretOf(identity);
  if (!identity.persisted) {
    if (s.pin === null) s.pin = keyText;
    return s.pin;
  }
  return store.userStore(identity.user).transact("readwrite", async (st, done) => {
    const rec = await store.get(st, "authority");
    if (rec && typeof rec.key === "string") {
      done(rec.key);
      return;
    }
    st.put({ key: keyText, pinned: Date.now() }, "authority");
    done(keyText);
  });
}

/** The epoch floors of `identity` (room -> highest epoch accepted), loaded once. */
export async function floorsOf(identity) {
  const s = secretOf(identity);
  if (s.floors === null) {
    let rooms = {};
    if (identity.persisted) {
      const rec = await store.userStore(identity.user).read("floors").catch(() => undefined);
      if (rec && rec.rooms && typeof rec.rooms === "object") rooms = rec.rooms;
    }
    if (s.floors === null) s.floors = new Map(Object.entries(rooms));
  }
  return s.floors;
}

export async function saveFloors(identity) {
  const s = secretOf(identity);
  if (identity.persisted && s.floors) {
    await store.userStore(identity.user).write("floors", { rooms: Object.fromEntries(s.floors) });
  }
}

/** Whether `user` keeps an identity in this browser (chose "keep this browser approved"). */
export async function hasStoredIdentity(user) {
  if (typeof user !== "string" || !user) return false;
  try {
    return validRecord(await store.userStore(user).read("identity"), user);
  } catch {
    return false;
  }
}
