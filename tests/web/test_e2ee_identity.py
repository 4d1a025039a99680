"""The browser's identity key (device/pttd/web/e2ee/identity.js): the same key text and
fingerprint as pttd's IdentityKey of the same seed, and its lifetimes (memory only, or kept in
IndexedDB when the user chose to keep the browser approved), per user: one user's kept identity
is never seen, taken or deleted by another user's login on the same browser."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

from e2ee_web import e2ee_page

from pttd.e2ee.keys import Fingerprint, IdentityKey, IdentityPublicKey

VECTORS = json.loads(
    (Path(__file__).parents[1] / "e2ee" / "data" / "xwing_keygen.json").read_text()
)["vectors"]


DERIVE = """
const out = [];
for (const seed of arg) {
  const d = await identity.deriveIdentity(bytes.fromHex(seed));
  out.push({keyText: d.keyText, fingerprint: d.fingerprint, groups: d.groups, digits: d.digits,
            digest: d.digest});
}
return out;
"""

USER = "desk"

LOAD = """
const user = arg.user ?? 'desk';
const id = await e2ee.loadIdentity({persist: arg.persist, user});
return {keyText: id.keyText, fingerprint: id.fingerprint, persisted: id.persisted, user: id.user,
        stored: await e2ee.hasStoredIdentity(user),
        generation: identity.secretOf(id).generation};
"""
STORED = "return await e2ee.hasStoredIdentity(arg);"
DATABASES = "return (await indexedDB.databases()).map((d) => d.name).sort();"


def load(persist: bool, user: str = USER) -> dict[str, object]:
    return {"persist": persist, "user": user}


async def test_key_text_and_fingerprint_are_pttds() -> None:
    seeds = [v["seed"] for v in VECTORS] + [secrets.token_hex(32)]
    async with e2ee_page() as p:
        got = await p.call(DERIVE, seeds)
    for n, (seed, browser) in enumerate(zip(seeds, got, strict=True)):
        key = IdentityKey.from_seed(bytes.fromhex(seed)).public
        assert browser["keyText"] == key.to_text()
        assert browser["fingerprint"] == key.fingerprint.digits
        assert browser["groups"] == key.fingerprint.digits.split(" ")
        assert browser["digits"] == key.fingerprint.digits.replace(" ", "")
        assert key.fingerprint.digest is not None
        assert browser["digest"] == key.fingerprint.digest.hex()
        # what `pttd keys approve NAME DIGITS` does with what the page shows
        assert Fingerprint.parse(browser["fingerprint"]).matches(key.fingerprint)
        assert IdentityPublicKey.from_text(browser["keyText"]) == key
        if n < len(VECTORS):  # the independent implementation's public key
            assert key.to_bytes()[1:].hex() == VECTORS[n]["public_key"]


async def test_a_memory_only_identity_is_gone_after_a_reload() -> None:
    async with e2ee_page() as p:
        first = await p.call(LOAD, load(False))
        assert first["persisted"] is False
        assert first["stored"] is False
        assert (await p.call(LOAD, load(False)))["keyText"] == first[
            "keyText"
        ]  # same page: same key
        await p.reload()
        second = await p.call(LOAD, load(False))
        assert second["keyText"] != first["keyText"]
        assert second["stored"] is False
        # nothing at all in the browser's storage, not even an empty database
        assert await p.call(DATABASES) == []
        # logout: forgotten at once, without a reload
        await p.call("await e2ee.forgetIdentity(arg);", USER)
        assert (await p.call(LOAD, load(False)))["keyText"] not in (
            first["keyText"],
            second["keyText"],
        )


async def test_a_kept_identity_survives_reloads_until_forgotten() -> None:
    async with e2ee_page() as p:
        kept = await p.call(LOAD, load(True))
        assert kept["persisted"] is True
        assert kept["stored"] is True
        await p.reload()
        assert await p.call(STORED, USER) is True
        again = await p.call(LOAD, load(True))
        assert again["keyText"] == kept["keyText"]
        # every page load takes a new counter generation, stored before use
        assert again["generation"] > kept["generation"]
        await p.reload()
        assert (await p.call(LOAD, load(True)))["generation"] > again["generation"]

        await p.call("await e2ee.forgetIdentity(arg);", USER)
        assert await p.call(STORED, USER) is False
        await p.reload()
        fresh = await p.call(LOAD, load(True))
        assert fresh["keyText"] != kept["keyText"]


async def test_unchecking_keep_takes_the_identity_out_of_storage() -> None:
    async with e2ee_page() as p:
        kept = await p.call(LOAD, load(True))
        await p.reload()
        # the user logs in without "keep this browser approved": this page still uses the key
        # (it is approved), but nothing of it stays in the browser's storage
        loose = await p.call(LOAD, load(False))
        assert loose["keyText"] == kept["keyText"]
        assert loose["persisted"] is False
        assert loose["stored"] is False
        assert loose["generation"] > kept["generation"]
        await p.reload()
        assert (await p.call(LOAD, load(False)))["keyText"] != kept["keyText"]


async def test_keeping_an_identity_made_in_memory_stores_that_one() -> None:
    async with e2ee_page() as p:
        loose = await p.call(LOAD, load(False))
        kept = await p.call(LOAD, load(True))
        assert kept["keyText"] == loose["keyText"]
        assert kept["generation"] == loose["generation"]  # the page's counters carry on
        await p.reload()
        after = await p.call(LOAD, load(True))
        assert after["keyText"] == loose["keyText"]
        assert after["generation"] > loose["generation"]


async def test_a_kept_identity_is_its_users_only() -> None:
    async with e2ee_page() as p:
        a = await p.call(LOAD, load(True, "a"))
        assert a["user"] == "a"
        await p.call("window.idA = await e2ee.loadIdentity({persist: true, user: 'a'});")
        # b on the same browser, in the same page (a logged out, b logged in): not a's key, and
        # nothing of a's is b's
        b = await p.call(LOAD, load(False, "b"))
        assert b["keyText"] != a["keyText"]
        assert b["user"] == "b"
        assert await p.call(STORED, "b") is False
        assert await p.call(STORED, "a") is True
        # a's key in memory was closed by b's load: nothing goes on with it in this page
        closed = await p.call(
            "try { identity.secretOf(window.idA); return null; } catch (e) { return e.message; }"
        )
        assert closed == "this identity was forgotten: load it again"
        # b forgetting (an unticked "keep" at logout) deletes nothing of a's
        await p.call("await e2ee.forgetIdentity(arg);", "b")
        assert await p.call(STORED, "a") is True
        # b keeping, then unticking "keep": a's stays
        kept_b = await p.call(LOAD, load(True, "b"))
        assert kept_b["keyText"] not in (a["keyText"], b["keyText"])
        assert await p.call(DATABASES) == ["pttd-e2ee user:a", "pttd-e2ee user:b"]
        loose_b = await p.call(LOAD, load(False, "b"))
        assert loose_b["keyText"] == kept_b["keyText"]
        assert await p.call(DATABASES) == ["pttd-e2ee user:a"]
        await p.call("await e2ee.closeIdentity();")
        # a again (same page, then after a reload): the same key, a new counter generation
        again = await p.call(LOAD, load(True, "a"))
        assert again["keyText"] == a["keyText"]
        assert again["generation"] > a["generation"]
        await p.reload()
        # b, even with "keep" unticked (the stored one of b's, if any, would be taken): new key
        assert (await p.call(LOAD, load(False, "b")))["keyText"] != a["keyText"]
        assert await p.call(STORED, "a") is True
        await p.reload()
        assert (await p.call(LOAD, load(True, "a")))["keyText"] == a["keyText"]
        # a key is only used for the user it is of
        refused = await p.call(
            "const id = await e2ee.loadIdentity({persist: true, user: 'a'});"
            "try { new e2ee.RoomKeys(id, null, 'b'); return null; } catch (e) { return e.message; }"
        )
        assert refused == "this identity key is another user's"
        # and a load names its user
        unnamed = await p.call(
            "try { await e2ee.loadIdentity({persist: true}); return null; }"
            " catch (e) { return e.message; }"
        )
        assert unnamed == "an identity belongs to a user: name the user logged in"


async def test_the_unbound_store_of_before_is_dropped_unread() -> None:
    """The one database of before per-user records ("pttd-e2ee", whose identity was used by
    whoever logged in) is deleted, not adopted by the next user."""
    async with e2ee_page() as p:
        seed = secrets.token_hex(32)
        await p.call(
            """
await new Promise((resolve, reject) => {
  const req = indexedDB.open('pttd-e2ee', 1);
  req.onupgradeneeded = () => req.result.createObjectStore('state');
  req.onsuccess = () => {
    const db = req.result;
    const tx = db.transaction('state', 'readwrite');
    tx.objectStore('state').put({seed: bytes.fromHex(arg), generation: 3, created: 1}, 'identity');
    tx.oncomplete = () => { db.close(); resolve(); };
    tx.onerror = () => reject(tx.error);
  };
  req.onerror = () => reject(req.error);
});
""",
            seed,
        )
        got = await p.call(LOAD, load(True))
        old = IdentityKey.from_seed(bytes.fromhex(seed)).public.to_text()
        assert got["keyText"] != old
        assert await p.call(DATABASES) == ["pttd-e2ee user:desk"]
