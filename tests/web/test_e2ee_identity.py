"""The browser's identity key (device/pttd/web/e2ee/identity.js): the same key text and
fingerprint as pttd's IdentityKey of the same seed, and its lifetimes (memory only, or kept in
IndexedDB when the user chose to keep the browser approved)."""

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

LOAD = """
const id = await e2ee.loadIdentity({persist: arg});
return {keyText: id.keyText, fingerprint: id.fingerprint, persisted: id.persisted,
        stored: await e2ee.hasStoredIdentity(),
        generation: identity.secretOf(id).generation};
"""


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
        first = await p.call(LOAD, False)
        assert first["persisted"] is False
        assert first["stored"] is False
        assert (await p.call(LOAD, False))["keyText"] == first["keyText"]  # same page: same key
        await p.reload()
        second = await p.call(LOAD, False)
        assert second["keyText"] != first["keyText"]
        assert second["stored"] is False
        # nothing at all in the browser's storage, not even an empty database
        assert await p.call("return (await indexedDB.databases()).map((d) => d.name);") == []
        # logout: forgotten at once, without a reload
        await p.call("await e2ee.forgetIdentity();")
        assert (await p.call(LOAD, False))["keyText"] not in (first["keyText"], second["keyText"])


async def test_a_kept_identity_survives_reloads_until_forgotten() -> None:
    async with e2ee_page() as p:
        kept = await p.call(LOAD, True)
        assert kept["persisted"] is True
        assert kept["stored"] is True
        await p.reload()
        assert await p.call("return await e2ee.hasStoredIdentity();") is True
        again = await p.call(LOAD, True)
        assert again["keyText"] == kept["keyText"]
        # every page load takes a new counter generation, stored before use
        assert again["generation"] > kept["generation"]
        await p.reload()
        assert (await p.call(LOAD, True))["generation"] > again["generation"]

        await p.call("await e2ee.forgetIdentity();")
        assert await p.call("return await e2ee.hasStoredIdentity();") is False
        await p.reload()
        fresh = await p.call(LOAD, True)
        assert fresh["keyText"] != kept["keyText"]


async def test_unchecking_keep_takes_the_identity_out_of_storage() -> None:
    async with e2ee_page() as p:
        kept = await p.call(LOAD, True)
        await p.reload()
        # the user logs in without "keep this browser approved": this page still uses the key
        # (it is approved), but nothing of it stays in the browser's storage
        loose = await p.call(LOAD, False)
        assert loose["keyText"] == kept["keyText"]
        assert loose["persisted"] is False
        assert loose["stored"] is False
        assert loose["generation"] > kept["generation"]
        await p.reload()
        assert (await p.call(LOAD, False))["keyText"] != kept["keyText"]


async def test_keeping_an_identity_made_in_memory_stores_that_one() -> None:
    async with e2ee_page() as p:
        loose = await p.call(LOAD, False)
        kept = await p.call(LOAD, True)
        assert kept["keyText"] == loose["keyText"]
        assert kept["generation"] == loose["generation"]  # the page's counters carry on
        await p.reload()
        after = await p.call(LOAD, True)
        assert after["keyText"] == loose["keyText"]
        assert after["generation"] > loose["generation"]
