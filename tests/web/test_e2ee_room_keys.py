"""Room keys in the browser (device/pttd/web/e2ee/index.js RoomKeys) against pttd's own key
authority and keyring: bundles sealed in Python open in the browser (and the wrong ones are
refused), and SFrame packets go both ways byte for byte."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import pytest
from e2ee_web import E2eePage, e2ee_page

from pttd.e2ee.authority import Authority
from pttd.e2ee.keyring import Keyring
from pttd.e2ee.keys import IdentityKey, IdentityPublicKey, bundle_to_text
from pttd.e2ee.sframe import SFrameError

ROOM = "Dispatch é"  # a non-ASCII name: the HPKE info is ASCII-escaped JSON in pttd
USER = "desk"

# The page's RoomKeys is window.keys; bytes cross as hex.
SETUP = """
const id = await e2ee.loadIdentity({persist: arg.persist, user: arg.name});
window.keys = new e2ee.RoomKeys(id, arg.authority, arg.name);
return {keyText: id.keyText, fingerprint: id.fingerprint,
        authority: await window.keys.authorityFingerprint()};
"""
ADD = """
try { return {ok: await window.keys.addRoomKey({command: 'on_room_key', channel: arg.room,
                                                  key: arg.key})}; }
catch (e) { return {error: e.message, reason: e.reason}; }
"""
SEAL = """
const out = [];
for (const pt of arg.packets) {
  out.push(bytes.toHex(await window.keys.seal(arg.room, bytes.fromHex(pt))));
}
return {packets: out, suite: window.keys.codecHeaderSuite(arg.room)};
"""
OPEN = """
const out = [];
for (const pkt of arg.packets) {
  try {
    const r = await window.keys.openFrom(arg.room, bytes.fromHex(pkt));
    out.push({payload: bytes.toHex(r.payload), sender: r.sender, epoch: r.epoch});
  } catch (e) { out.push({error: e.message}); }
}
return out;
"""


def opus_like(n: int) -> bytes:
    """Bytes shaped like a 20 ms Opus packet (a TOC byte, then 60 to 120 bytes of payload)."""
    return bytes([0x78]) + secrets.token_bytes(60 + n % 60)


async def setup(
    p: E2eePage, authority: Authority | None, name: str = USER, persist: bool = False
) -> dict[str, Any]:
    arg = {
        "persist": persist,
        "authority": authority.public_key.to_text() if authority else None,
        "name": name,
    }
    result: dict[str, Any] = await p.call(SETUP, arg)
    return result


async def add(p: E2eePage, room: str, bundle: bytes) -> dict[str, Any]:
    result: dict[str, Any] = await p.call(ADD, {"room": room, "key": bundle_to_text(bundle)})
    return result


def approve(authority: Authority, room: str, name: str, key_text: str) -> bytes:
    public = IdentityPublicKey.from_text(key_text)
    if room not in authority.rooms():
        authority.add_room(room)
    bundles = dict(authority.approve(room, name, public, public.fingerprint.digits))
    return bundles[name]


async def test_a_bundle_sealed_by_pttds_authority_opens_in_the_browser(tmp_path: Path) -> None:
    authority = Authority.create(tmp_path / "authority.json")
    async with e2ee_page() as p:
        me = await setup(p, authority)
        assert me["authority"] == authority.public_key.fingerprint
        bundle = approve(authority, ROOM, USER, me["keyText"])
        assert (await add(p, ROOM, bundle))["ok"] == {"room": ROOM, "epoch": 1}
        assert await p.call("return window.keys.hasKey(arg);", ROOM) is True
        assert await p.call("return window.keys.whyLocked(arg);", ROOM) is None
        assert await p.call("return window.keys.state(arg);", ROOM) == (
            "encrypted, epoch 1, 1 members, sender 0"
        )
        # every key WebCrypto holds is non-extractable (the X-Wing seed cannot be a CryptoKey)
        extractable = await p.call(
            """
            const held = window.keys._rooms.get(arg);
            await window.keys.seal(arg, new Uint8Array([0x78]));
            const own = await held.sender.keyed;
            return [held.epochSecret.extractable, own._aes.extractable, own._mac.extractable,
                    held.epochSecret.type, own._aes.algorithm.name, own._mac.algorithm.name];
            """,
            ROOM,
        )
        assert extractable == [False, False, False, "secret", "AES-CTR", "HMAC"]
        # the same key again (a reconnection): taken, nothing changes
        assert (await add(p, ROOM, bundle))["ok"] == {"room": ROOM, "epoch": 1}
        # a rotation: the newer epoch
        rotated = dict(authority.rotate(ROOM))[USER]
        assert (await add(p, ROOM, rotated))["ok"] == {"room": ROOM, "epoch": 2}
        # and the older one is refused from now on
        old = await add(p, ROOM, bundle)
        assert old["reason"] == "epoch 1 is older than epoch 2, accepted before"
        assert await p.call("return window.keys.hasKey(arg);", ROOM) is True


async def test_wrong_bundles_are_refused(tmp_path: Path) -> None:
    authority = Authority.create(tmp_path / "authority.json")
    other = Authority.create(tmp_path / "other.json")
    async with e2ee_page() as p:
        me = await setup(p, authority)
        # signed by another authority
        forged = approve(other, ROOM, USER, me["keyText"])
        assert (await add(p, ROOM, forged))["reason"] == "not signed by this room's key authority"
        # for another member name (this key approved under another name)
        elsewhere = approve(authority, "Elsewhere", "someone", me["keyText"])
        got = await add(p, "Elsewhere", elsewhere)
        assert got["reason"] == "wrapped for this device under another name"
        # for another device (another identity key under this member's name)
        stranger = IdentityKey.generate().public.to_text()
        assert (await add(p, ROOM, approve(authority, ROOM, USER, stranger)))["reason"] == (
            "wrapped for another device"
        )
        # for another room than the one it is delivered for
        mine = approve(authority, "Yard", USER, me["keyText"])
        got = await add(p, ROOM, mine)
        assert got["reason"] == "sealed for room 'Yard', delivered for 'Dispatch é'"
        # a signed bundle with one bit flipped, and junk
        flipped = bytearray(mine)
        flipped[40] ^= 0x01
        assert (await add(p, "Yard", bytes(flipped)))["reason"] == (
            "not signed by this room's key authority"
        )
        got = await p.call(ADD, {"room": ROOM, "key": "not base64url!"})
        assert got["reason"] == "malformed room key"
        assert got["error"] == "room key refused: malformed room key"
        # nothing of it was installed, and the page can say why
        assert await p.call("return window.keys.hasKey(arg);", ROOM) is False
        why = await p.call("return window.keys.whyLocked(arg);", ROOM)
        assert why == "room key refused: malformed room key"
        # the right one still opens
        assert (await add(p, "Yard", mine))["ok"] == {"room": "Yard", "epoch": 1}


async def test_the_first_authority_is_pinned(tmp_path: Path) -> None:
    authority = Authority.create(tmp_path / "authority.json")
    other = Authority.create(tmp_path / "other.json")
    async with e2ee_page() as p:
        me = await setup(p, authority, persist=True)
        assert "ok" in await add(p, ROOM, approve(authority, ROOM, USER, me["keyText"]))
        await p.reload()
        # the server now names another authority (and has it sign a key for this browser)
        again = await setup(p, other, persist=True)
        assert again["keyText"] == me["keyText"]
        got = await add(p, ROOM, approve(other, ROOM, USER, me["keyText"]))
        assert got["reason"] == (
            f"the server now names key authority {other.public_key.fingerprint}, but this "
            f"browser trusts {authority.public_key.fingerprint}: refused (forget this browser's "
            "key to trust another authority)"
        )
        # the same after the user unticks "keep this browser approved" (this page still uses
        # the approved key and its pin; nothing stays stored)
        await p.reload()
        loose = await setup(p, other, persist=False)
        assert loose["keyText"] == me["keyText"]
        assert (
            "but this browser trusts"
            in (await add(p, ROOM, approve(other, ROOM, USER, me["keyText"])))["reason"]
        )
        kept = await setup(p, other, persist=True)  # ticked again: stored again, pin too
        await p.reload()
        assert (await setup(p, other, persist=True))["keyText"] == kept["keyText"]
        assert (
            "but this browser trusts"
            in (await add(p, ROOM, approve(other, ROOM, USER, me["keyText"])))["reason"]
        )
        # forgetting the browser's key forgets the pin with it
        await p.call("await e2ee.forgetIdentity(arg);", USER)
        fresh = await setup(p, other, persist=True)
        assert "ok" in await add(p, ROOM, approve(other, ROOM, USER, fresh["keyText"]))
        # without an authority, rooms stay locked
        await setup(p, None)
        got = await add(p, ROOM, approve(other, ROOM, USER, fresh["keyText"]))
        assert got["reason"] == "the server names no key authority: encrypted rooms stay locked"


async def test_packets_go_both_ways_with_pttds_keyring(tmp_path: Path) -> None:
    authority = Authority.create(tmp_path / "authority.json")
    radio_key = IdentityKey.generate()
    radio = Keyring(radio_key, authority.public_key, "radio", generation=7)
    async with e2ee_page() as p:
        me = await setup(p, authority)
        approve(authority, ROOM, "radio", radio_key.public.to_text())
        for name, bundle in authority.approve(
            ROOM,
            USER,
            IdentityPublicKey.from_text(me["keyText"]),
            me["fingerprint"],  # what the admin types: the digits the page shows
        ):
            if name == USER:
                assert "ok" in await add(p, ROOM, bundle)
        for name, bundle in authority.bundles(ROOM):  # the radio's roster names the browser
            if name == "radio":
                radio.accept(ROOM, bundle_to_text(bundle))

        # radio -> browser, byte for byte, with the sender's name
        said = [opus_like(n) for n in range(30)]
        sealed = [radio.seal(ROOM, pt) for pt in said]
        heard = await p.call(OPEN, {"room": ROOM, "packets": [s.hex() for s in sealed]})
        assert [h.get("payload") for h in heard] == [pt.hex() for pt in said]
        assert {h["sender"] for h in heard} == {"radio"}
        assert {h["epoch"] for h in heard} == {1}
        # a replay, and a packet with any one bit flipped, are refused
        flips = []
        for n in range(len(sealed[0]) * 8):
            bad = bytearray(sealed[0])
            bad[n // 8] ^= 1 << (n % 8)
            flips.append(bytes(bad).hex())
        refused = await p.call(OPEN, {"room": ROOM, "packets": [sealed[3].hex(), *flips]})
        assert "already received" in refused[0]["error"]
        assert all("error" in r for r in refused[1:]), [r for r in refused[1:] if "error" not in r]
        # out of order within the window: accepted once
        late = radio.seal(ROOM, said[0])
        later = radio.seal(ROOM, said[1])
        heard = await p.call(OPEN, {"room": ROOM, "packets": [later.hex(), late.hex(), late.hex()]})
        assert [h.get("payload") for h in heard[:2]] == [said[1].hex(), said[0].hex()]
        assert "already received" in heard[2]["error"]
        # bound to the room: the same key under another room's metadata does not open
        assert "error" in (await p.call(OPEN, {"room": "Yard", "packets": [later.hex()]}))[0]

        # browser -> radio, byte for byte, with the browser's name
        talk = [opus_like(n) for n in range(30)]
        out = await p.call(SEAL, {"room": ROOM, "packets": [pt.hex() for pt in talk]})
        assert out["suite"] == 1
        packets = [bytes.fromhex(x) for x in out["packets"]]
        for pt, pkt in zip(talk, packets, strict=True):
            opened = radio.open(ROOM, pkt)
            assert (opened.sender, opened.payload) == (USER, pt)
        with pytest.raises(SFrameError, match="already received"):
            radio.open(ROOM, packets[0])
        bad = bytearray(packets[1])
        bad[-1] ^= 0x80
        with pytest.raises(SFrameError):
            radio.open(ROOM, bytes(bad))

        # a rotation: packets of the previous epoch still in flight open; the new one too
        in_flight = radio.seal(ROOM, said[2])
        for name, bundle in authority.rotate(ROOM):
            if name == USER:
                assert (await add(p, ROOM, bundle))["ok"]["epoch"] == 2
            else:
                radio.accept(ROOM, bundle_to_text(bundle))
        new = radio.seal(ROOM, said[3])
        heard = await p.call(OPEN, {"room": ROOM, "packets": [in_flight.hex(), new.hex()]})
        assert [(h["payload"], h["epoch"]) for h in heard] == [
            (said[2].hex(), 1),
            (said[3].hex(), 2),
        ]
        out = await p.call(SEAL, {"room": ROOM, "packets": [talk[0].hex()]})
        opened = radio.open(ROOM, bytes.fromhex(out["packets"][0]))
        assert (opened.sender, opened.epoch, opened.payload) == (USER, 2, talk[0])


async def test_counters_carry_on_and_never_repeat(tmp_path: Path) -> None:
    """A second RoomKeys of the same page (a reconnection) carries on from the first's
    counters; a kept identity's next page load starts above everything the last one used."""
    authority = Authority.create(tmp_path / "authority.json")
    radio_key = IdentityKey.generate()
    radio = Keyring(radio_key, authority.public_key, "radio", generation=1)
    counters = """
    const out = [];
    for (let i = 0; i < 3; i++) {
      const pkt = await window.keys.seal(arg, new Uint8Array([0x78, i]));
      out.push(sframe.decodeHeader(pkt).ctr.toString());
    }
    return out;
    """
    async with e2ee_page() as p:
        me = await setup(p, authority, persist=True)
        approve(authority, ROOM, "radio", radio_key.public.to_text())
        bundle = approve(authority, ROOM, USER, me["keyText"])
        radio.accept(ROOM, bundle_to_text(dict(authority.bundles(ROOM))["radio"]))
        assert "ok" in await add(p, ROOM, bundle)
        first = [int(c) for c in await p.call(counters, ROOM)]
        assert first[0] >> 40 >= 1 and first == [first[0], first[0] + 1, first[0] + 2]
        await setup(p, authority, persist=True)  # a new RoomKeys, same page
        assert "ok" in await add(p, ROOM, bundle)
        second = [int(c) for c in await p.call(counters, ROOM)]
        assert second[0] == first[-1] + 1
        await p.reload()
        await setup(p, authority, persist=True)
        assert "ok" in await add(p, ROOM, bundle)
        third = [int(c) for c in await p.call(counters, ROOM)]
        assert third[0] >> 40 == (first[0] >> 40) + 1
        assert third[0] & (2**40 - 1) == 0


@pytest.mark.parametrize("suite", [2, 3, 4, 5])
async def test_the_other_sframe_suites_both_ways(tmp_path: Path, suite: int) -> None:
    authority = Authority.create(tmp_path / "authority.json")
    authority.add_room(ROOM, suite=suite)
    radio_key = IdentityKey.generate()
    radio = Keyring(radio_key, authority.public_key, "radio", generation=3)
    async with e2ee_page() as p:
        me = await setup(p, authority)
        approve(authority, ROOM, "radio", radio_key.public.to_text())
        assert "ok" in await add(p, ROOM, approve(authority, ROOM, USER, me["keyText"]))
        radio.accept(ROOM, bundle_to_text(dict(authority.bundles(ROOM))["radio"]))
        said = [opus_like(n) for n in range(5)]
        heard = await p.call(
            OPEN, {"room": ROOM, "packets": [radio.seal(ROOM, pt).hex() for pt in said]}
        )
        assert [h.get("payload") for h in heard] == [pt.hex() for pt in said]
        out = await p.call(SEAL, {"room": ROOM, "packets": [pt.hex() for pt in said]})
        assert out["suite"] == suite
        assert [radio.open(ROOM, bytes.fromhex(x)).payload for x in out["packets"]] == said
        bad = bytearray.fromhex(out["packets"][0])
        bad[-1] ^= 1
        assert (
            "tag mismatch"
            in (await p.call(OPEN, {"room": ROOM, "packets": [bad.hex()]}))[0]["error"]
        )
