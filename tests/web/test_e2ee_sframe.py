"""SFrame in the browser (device/pttd/web/e2ee/sframe.js) against RFC 9605's test vectors."""

from __future__ import annotations

import json
from pathlib import Path

from e2ee_web import e2ee_page

VECTORS = json.loads(
    (Path(__file__).parents[1] / "e2ee" / "data" / "rfc9605_vectors.json").read_text()
)


async def test_rfc9605_vectors_in_the_browser() -> None:
    async with e2ee_page() as p:
        result = await p.call(
            """
            const {fromHex, toHex} = bytes;
            const out = {header: [], aead: [], sframe: []};
            for (const v of arg.header) {
              const h = sframe.encodeHeader(BigInt(v.kid), BigInt(v.ctr));
              const d = sframe.decodeHeader(fromHex(v.header));
              out.header.push([toHex(h), '0x' + d.kid.toString(16).padStart(16, '0'),
                               '0x' + d.ctr.toString(16).padStart(16, '0'), d.length]);
            }
            for (const v of arg.aes_ctr_hmac) {
              const suite = Number(v.cipher_suite);
              const keyed = await sframe.Keyed.create(suite, fromHex(v.key), new Uint8Array(12));
              const ct = await keyed.aeadEncrypt(fromHex(v.nonce), fromHex(v.aad), fromHex(v.pt));
              const pt = await keyed.aeadDecrypt(fromHex(v.nonce), fromHex(v.aad), fromHex(v.ct));
              out.aead.push([toHex(ct), toHex(pt)]);
            }
            for (const v of arg.sframe) {
              const suite = Number(v.cipher_suite);
              const base = await sframe.importBaseKey(fromHex(v.base_key));
              const ks = await sframe.deriveKeySalt(suite, BigInt(v.kid), base);
              const keyed = await sframe.Keyed.fromBaseKey(suite, BigInt(v.kid), base);
              const ct = await keyed.seal(BigInt(v.kid), BigInt(v.ctr), fromHex(v.metadata),
                                          fromHex(v.pt));
              const r = new sframe.Receiver(suite);
              r.addKey(BigInt(v.kid), 'k', async () => keyed);
              const opened = await r.open(fromHex(v.ct), fromHex(v.metadata));
              let replay = null;
              try { await r.open(fromHex(v.ct), fromHex(v.metadata)); }
              catch (e) { replay = e.kind; }
              out.sframe.push([toHex(ks.key), toHex(ks.salt), toHex(keyed.nonce(BigInt(v.ctr))),
                               toHex(ct), toHex(opened.plaintext), replay]);
            }
            return out;
            """,
            VECTORS,
        )
    for v, (header, kid, ctr, length) in zip(VECTORS["header"], result["header"], strict=True):
        assert header == v["header"]
        assert (kid, ctr, length) == (v["kid"], v["ctr"], len(v["header"]) // 2)
    for v, (ct, pt) in zip(VECTORS["aes_ctr_hmac"], result["aead"], strict=True):
        assert (ct, pt) == (v["ct"], v["pt"]), v["cipher_suite"]
    for v, (key, salt, nonce, ct, pt, replay) in zip(
        VECTORS["sframe"], result["sframe"], strict=True
    ):
        assert (key, salt, nonce) == (v["sframe_key"], v["sframe_salt"], v["nonce"])
        assert ct == v["ct"], v["cipher_suite"]
        assert pt == v["pt"]
        assert replay == "replay"
    assert {v["cipher_suite"] for v in VECTORS["sframe"]} == {f"0x000{n}" for n in range(1, 6)}
