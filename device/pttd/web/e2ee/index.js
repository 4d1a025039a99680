// End-to-end encrypted rooms in the browser: the page's identity key and its room keys, doing
// what a device's pttd.e2ee.keyring.Keyring does (PROTOCOL.md, "End-to-end encryption").
//
//   const identity = await loadIdentity({persist, user: session.user}); // logon's identity_key
//   const keys = new RoomKeys(identity, config.authority_key, session.user);
//   channel.addEventListener("on_room_key", (e) => keys.addRoomKey(e.detail));
//   const suite = keys.codecHeaderSuite(room);            // bytes 4-5 of the codec header
//   channel.sendAudio(streamId, 0, await keys.seal(room, opus));
//   audio.pushPacket(streamId, await keys.open(room, packet));
//
// The key authority. A device learns the authority's public key from the pairing link the
// installer carries, never from the server. A browser has no such channel: the page learns it
// from GET /api/config, i.e. from the very server end-to-end encryption is meant to keep out.
// What is done about it:
//   * trust on first use: the first authority key this identity meets is pinned (in IndexedDB
//     with a kept identity, for the page's life otherwise) and bundles signed by any other key
//     are refused, with both fingerprints in the message. A server that turns hostile later
//     cannot swap the authority for a kept browser.
//   * its fingerprint (30 digits, as `pttd keys show` prints it) is on RoomKeys
//     (authorityFingerprint()) for the page to show, so a user can compare it once with the
//     admin's. Until someone has, a server that lied at first use could have this browser
//     trust keys it made up (it would hear what the browser says, and the browser would hear
//     none of the real room: the real members never get keys from a fake authority).
//   * forgetIdentity(user) forgets the pin along with the identity (the way to accept a new
//     authority, after which the browser must be approved again).
// And, as for any web page: the JavaScript doing all this is served by that same server. These
// checks protect against a relay that passes packets and keys on (or records them) and against
// a server compromised after a kept browser pinned its authority; a server that serves a
// modified page at the time of use defeats any in-page check.

import { concat, utf8 } from "./bytes.js";
import {
  KeyRefused,
  authorityFingerprint,
  bundleFromText,
  importAuthorityKey,
  openBundle,
} from "./bundle.js";
import {
  GENERATION_SHIFT,
  closeIdentity,
  floorsOf,
  forgetIdentity,
  hasStoredIdentity,
  loadIdentity,
  pinAuthority,
  saveFloors,
  secretOf,
} from "./identity.js";
import { DEFAULT_SUITE, Keyed, Receiver, SUITES, Sender, importBaseKey } from "./sframe.js";

// hasStoredIdentity(user): whether that user chose "keep this browser approved" before (the
// page's "keep" choice starts checked then, for that user only).
export { authorityFingerprint, closeIdentity, forgetIdentity, hasStoredIdentity, loadIdentity };

const WAITING = "waiting for its room key (not approved by the key authority yet?)";
const NO_AUTHORITY = "the server names no key authority: encrypted rooms stay locked";

const SENDER_KEY_SALT = utf8("pttd-e2ee-v1");
const SENDER_KEY_LABEL = utf8("pttd-e2ee-v1 sframe sender base key");

/** The KID of a sender in an epoch: epoch << 16 | index (pttd.e2ee.keys.make_kid). */
function makeKid(epoch, index) {
  return (BigInt(epoch) << 16n) | BigInt(index);
}

/** The SFrame base key (an HKDF CryptoKey, non-extractable) of sender `index` in the epoch whose
 *  secret is `epochSecret` (an HKDF CryptoKey): pttd.e2ee.keys.sender_base_key. */
async function senderBaseKey(epochSecret, index) {
  const info = concat(SENDER_KEY_LABEL, Uint8Array.of(index >> 8, index & 0xff));
  const bits = new Uint8Array(
    await crypto.subtle.deriveBits({ name: "HKDF", hash: "SHA-256", salt: SENDER_KEY_SALT, info }, epochSecret, 256),
  );
  try {
    return await importBaseKey(bits);
  } finally {
    bits.fill(0);
  }
}

async function secretId(secret) {
  // Names an epoch secret (to tell a re-issue from a second, different key of one epoch) without
  // keeping its bytes.
  const d = new Uint8Array(await crypto.subtle.digest("SHA-256", concat(utf8("pttd-web secret id\0"), secret)));
  return Array.from(d, (x) => x.toString(16).padStart(2, "0")).join("");
}

/** `text` quoted as Python's repr quotes a string (pttd's messages name rooms so). */
function quoted(text) {
  const s = String(text).replaceAll("\\", "\\\\");
  if (s.includes("'") && !s.includes('"')) return `"${s}"`;
  return `'${s.replaceAll("'", "\\'")}'`;
}

function oneLine(err) {
  return String((err && err.message) || err).split("\n")[0];
}

export class RoomKeys {
  /** `identity` from loadIdentity, `authorityKeyText` GET /api/config's `authority_key` (null:
   *  none), `memberName` the user name this page logged on as (bundles name it). */
  constructor(identity, authorityKeyText, memberName) {
    secretOf(identity); // an Error now if it was forgotten
    if (identity.user !== memberName) throw new Error("this identity key is another user's");
    this.identity = identity;
    this.authorityKeyText = authorityKeyText || null;
    this.memberName = memberName;
    this._rooms = new Map(); // room -> {key, secretId, epochSecret, previous, receiver, sender, metadata}
    this._refused = new Map(); // room -> why its last key was refused
    this._queue = Promise.resolve(); // room keys are taken one at a time
    this._authority = null; // Promise of the verified, pinned authority CryptoKey
  }

  /** The authority's fingerprint (30 digits in groups of 5) for the page to show; null if none. */
  authorityFingerprint() {
    return authorityFingerprint(this.authorityKeyText);
  }

  async _authorityKey() {
    if (!this.authorityKeyText) throw new KeyRefused(NO_AUTHORITY);
    if (!this._authority) {
      this._authority = (async () => {
        const key = await importAuthorityKey(this.authorityKeyText);
        if (!key) throw new KeyRefused("the server's key authority is not an Ed25519 public key");
        const pinned = await pinAuthority(this.identity, this.authorityKeyText);
        if (pinned !== this.authorityKeyText) {
          const [was, now] = await Promise.all([authorityFingerprint(pinned), authorityFingerprint(this.authorityKeyText)]);
          throw new KeyRefused(
            `the server now names key authority ${now}, but this browser trusts ${was}: ` +
              "refused (forget this browser's key to trust another authority)",
          );
        }
        return key;
      })();
      this._authority.catch(() => (this._authority = null));
    }
    return this._authority;
  }

  /** Take an on_room_key message ({channel, key}): resolves {room, epoch}; throws an Error of one
   *  line (a KeyRefused with `reason`) and keeps the key held before, if any. */
  addRoomKey(message) {
    const run = this._queue.then(() => this._add(message));
    this._queue = run.catch(() => undefined);
    return run;
  }

  async _add(message) {
    const room = message && message.channel;
    if (typeof room !== "string" || !room) throw new KeyRefused("an on_room_key without a room");
    let key = null;
    try {
      const authority = await this._authorityKey();
      const own = secretOf(this.identity);
      key = await openBundle(bundleFromText(message.key), authority, this.authorityKeyText, own, this.memberName);
      if (key.room !== room) throw new KeyRefused(`sealed for room ${quoted(key.room)}, delivered for ${quoted(room)}`);
      if (!SUITES[key.suite]) throw new KeyRefused(`SFrame suite ${key.suite} is not supported here`);
      const floors = await floorsOf(this.identity);
      const floor = floors.get(room) || 0;
      const held = this._rooms.get(room);
      if (key.epoch < floor) throw new KeyRefused(`epoch ${key.epoch} is older than epoch ${floor}, accepted before`);
      if (held && key.epoch < held.key.epoch) throw new KeyRefused(`epoch ${key.epoch} is older than the epoch ${held.key.epoch} held`);
      const id = await secretId(key.epochSecret);
      if (held && key.epoch === held.key.epoch) {
        if (id !== held.secretId || key.suite !== held.key.suite) throw new KeyRefused(`a second, different key for epoch ${key.epoch}`);
        const heldRoster = new Set(held.key.roster.map(([i, n]) => `${i}\0${n}`));
        if (key.roster.every(([i, n]) => heldRoster.has(`${i}\0${n}`))) {
          return { room, epoch: key.epoch }; // the same key again (a reconnection, a re-issue)
        }
      }
      await this._install(room, key, id, held);
      this._refused.delete(room);
      if (key.epoch > floor) {
        floors.set(room, key.epoch);
        await saveFloors(this.identity).catch(() => undefined); // kept where it can be
      }
      return { room, epoch: key.epoch };
    } catch (err) {
      const reason = err instanceof KeyRefused ? err.reason : oneLine(err);
      this._refused.set(room, reason);
      throw err instanceof KeyRefused ? err : new KeyRefused(reason);
    } finally {
      if (key) key.epochSecret.fill(0);
    }
  }

  async _install(room, key, id, held) {
    const sameEpoch = held && held.key.epoch === key.epoch;
    const epochSecret = sameEpoch
      ? held.epochSecret
      : await crypto.subtle.importKey("raw", key.epochSecret, "HKDF", false, ["deriveBits"]);
    const current = { key, secretId: id, epochSecret };
    let previous = null;
    if (held) previous = sameEpoch ? held.previous : { key: held.key, secretId: held.secretId, epochSecret: held.epochSecret };
    // The receiver carries on (a KID kept keeps its replay window); the previous epoch only for
    // the members who remain.
    const receiver = held && held.receiver.suite === key.suite ? held.receiver : new Receiver(key.suite);
    const remain = new Set(key.roster.map(([i]) => i));
    const wanted = new Map();
    for (const epoch of [previous, current]) {
      if (!epoch || epoch.key.suite !== key.suite) continue;
      for (const [index] of epoch.key.roster) {
        if (epoch === current || remain.has(index)) wanted.set(makeKid(epoch.key.epoch, index), { epoch, index });
      }
    }
    for (const kid of receiver.kids()) if (!wanted.has(kid)) receiver.removeKey(kid);
    for (const [kid, { epoch, index }] of wanted) {
      const suite = key.suite;
      receiver.addKey(kid, epoch.secretId, async () => Keyed.fromBaseKey(suite, kid, await senderBaseKey(epoch.epochSecret, index)));
    }
    // Our sender: one per (room, KID) for the page's life, carrying on from its counter.
    const state = secretOf(this.identity);
    const kid = makeKid(key.epoch, key.senderIndex);
    const slot = `${room}\0${kid}`;
    let sender = state.senders.get(slot);
    if (!sender) {
      const keyed = await Keyed.fromBaseKey(key.suite, kid, await senderBaseKey(epochSecret, key.senderIndex));
      sender = new Sender(keyed, kid, BigInt(state.generation) << GENERATION_SHIFT);
      state.senders.set(slot, sender);
    }
    const stored = { ...key, epochSecret: undefined };
    this._rooms.set(room, { key: stored, secretId: id, epochSecret, previous, receiver, sender, metadata: utf8(room) });
  }

  /** Whether a room key is held for `room` (it can be talked and heard in). */
  hasKey(room) {
    return this._rooms.has(room);
  }

  /** Why `room` is locked here (null: a key is held), for people. */
  whyLocked(room) {
    if (this._rooms.has(room)) return null;
    if (!this.authorityKeyText) return NO_AUTHORITY;
    const refused = this._refused.get(room);
    return refused ? `room key refused: ${refused}` : WAITING;
  }

  /** The room's key state for people: never a secret. */
  state(room) {
    const held = this._rooms.get(room);
    if (!held) return this.whyLocked(room);
    const k = held.key;
    return `encrypted, epoch ${k.epoch}, ${k.roster.length} members, sender ${k.senderIndex}`;
  }

  _held(room) {
    const held = this._rooms.get(room);
    if (!held) throw new Error(`no room key for ${room}: ${this.whyLocked(room)}`);
    return held;
  }

  /** The SFrame suite for bytes 4-5 of the codec header of a talk in `room` (the suite the
   *  authority chose for it; pttd's default, 1, when no room is named). */
  codecHeaderSuite(room) {
    if (room === undefined) return DEFAULT_SUITE;
    return this._held(room).key.suite;
  }

  /** One Opus packet (Uint8Array) of ours sealed for `room`: the SFrame packet. */
  async seal(room, opusBytes) {
    const held = this._held(room);
    return held.sender.seal(opusBytes, held.metadata);
  }

  /** The Opus packet in SFrame `packetBytes` heard in `room`; throws (one line) when it does not
   *  open: forged, tampered, replayed, or a key this member does not hold. */
  async open(room, packetBytes) {
    return (await this.openFrom(room, packetBytes)).payload;
  }

  /** {sender: the roster's name (null if unknown), epoch, payload} of a packet heard in `room`. */
  async openFrom(room, packetBytes) {
    const held = this._held(room);
    const opened = await held.receiver.open(packetBytes, held.metadata);
    const epoch = Number(opened.kid >> 16n);
    const index = Number(opened.kid & 0xffffn);
    const key = epoch === held.key.epoch ? held.key : held.previous && held.previous.key;
    const entry = key ? key.roster.find(([i]) => i === index) : undefined;
    return { sender: entry ? entry[1] : null, epoch, payload: opened.plaintext };
  }

  /** Every room key goes (logout, revoked). */
  forget() {
    this._rooms.clear();
    this._refused.clear();
  }
}
