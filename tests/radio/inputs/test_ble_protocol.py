"""BLE PTT buttons without a radio: the sans-I/O decoder (which characteristics to subscribe to,
what their notifications mean) and the ``[[ptt]] kind = "ble"`` / ``bluetooth.buttons`` config."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pttd.errors import ConfigError
from pttd.radio.config import PTT_Z_SERVICE, Config, apply_overrides, parse_config
from pttd.radio.inputs import Button
from pttd.radio.inputs.ble_protocol import (
    BATTERY_LEVEL,
    BATTERY_SERVICE,
    HAND_MIC_SERVICE,
    PTT_Z_CHARACTERISTIC,
    BleButtonSpec,
    BleDecoder,
    Characteristic,
    NotAPttButton,
    battery_percent,
    describe_state,
    looks_like_ptt,
)

ADDRESS = "AA:BB:CC:DD:EE:FF"
NOTIFY = ("read", "notify")
SOS = "0000ffe2-0000-1000-8000-00805f9b34fb"
PTT_DOWN, PTT_UP = (Button.PTT, True), (Button.PTT, False)
SOS_DOWN, SOS_UP = (Button.EMERGENCY, True), (Button.EMERGENCY, False)


def uuid16(short: str) -> str:
    return f"0000{short}-0000-1000-8000-00805f9b34fb"


def ptt_z(*extra: Characteristic) -> list[Characteristic]:
    """What a PTT-Z button shows after service discovery: ffe0/ffe1 and a battery service."""
    return [
        Characteristic(uuid16("2a00"), uuid16("1800"), ("read",)),
        Characteristic(PTT_Z_CHARACTERISTIC, PTT_Z_SERVICE, NOTIFY),
        Characteristic(BATTERY_LEVEL, BATTERY_SERVICE, NOTIFY),
        *extra,
    ]


# --------------------------------------------------------------------------- the plan


def test_a_ptt_z_button_is_its_ffe1_characteristic_as_ptt() -> None:
    decoder = BleDecoder(BleButtonSpec(ADDRESS))
    assert decoder.plan(ptt_z()) == {PTT_Z_CHARACTERISTIC: Button.PTT}  # not the battery


def test_a_hand_mic_is_any_notifying_characteristic_of_its_service() -> None:
    spec = BleButtonSpec(ADDRESS, service=HAND_MIC_SERVICE)
    a, b = "28393551-0001-0000-0000-000000000001", "28393551-0001-0000-0000-000000000002"
    found = [
        Characteristic(a, HAND_MIC_SERVICE, ("notify",)),
        Characteristic(b, HAND_MIC_SERVICE, ("indicate",)),
        Characteristic("28393551-0001-0000-0000-000000000003", HAND_MIC_SERVICE, ("write",)),
        Characteristic(PTT_Z_CHARACTERISTIC, PTT_Z_SERVICE, NOTIFY),  # another service's
    ]
    assert BleDecoder(spec).plan(found) == {a: Button.PTT, b: Button.PTT}


def test_a_spec_without_a_service_takes_either_ptt_service() -> None:
    """What `bt add` binds: a PTT-Z button or a hand microphone, whichever it turns out to be."""
    spec = BleButtonSpec(ADDRESS, service="")
    assert BleDecoder(spec).plan(ptt_z()) == {PTT_Z_CHARACTERISTIC: Button.PTT}
    mic = "28393551-0001-0000-0000-000000000001"
    found = [Characteristic(mic, HAND_MIC_SERVICE, NOTIFY), *ptt_z()[:1]]
    assert BleDecoder(spec).plan(found) == {mic: Button.PTT}
    with pytest.raises(NotAPttButton, match="a PTT service"):
        BleDecoder(spec).plan(ptt_z()[:1])


def test_a_configured_characteristic_is_the_only_one_subscribed() -> None:
    wanted = "0000fff4-0000-1000-8000-00805f9b34fb"
    spec = BleButtonSpec(ADDRESS, service=uuid16("fff0"), characteristic=wanted)
    found = [
        Characteristic(uuid16("fff1"), uuid16("fff0"), NOTIFY),
        Characteristic(wanted, uuid16("fff0"), NOTIFY),
        *ptt_z(),
    ]
    assert BleDecoder(spec).plan(found) == {wanted: Button.PTT}


def test_the_sos_characteristic_is_the_emergency_button() -> None:
    spec = BleButtonSpec(ADDRESS, sos_characteristic=SOS)
    plan = BleDecoder(spec).plan(ptt_z(Characteristic(SOS, PTT_Z_SERVICE, NOTIFY)))
    # in the PTT service, but configured as SOS: emergency only
    assert plan == {PTT_Z_CHARACTERISTIC: Button.PTT, SOS: Button.EMERGENCY}


def test_a_missing_sos_characteristic_is_left_out() -> None:
    spec = BleButtonSpec(ADDRESS, sos_characteristic=SOS)
    assert BleDecoder(spec).plan(ptt_z()) == {PTT_Z_CHARACTERISTIC: Button.PTT}


def test_no_ptt_characteristic_is_not_a_ptt_button_naming_what_is_missing() -> None:
    heart_rate = [Characteristic(uuid16("2a37"), uuid16("180d"), ("notify",))]
    with pytest.raises(NotAPttButton) as default:
        BleDecoder(BleButtonSpec(ADDRESS)).plan(heart_rate)
    assert str(default.value) == (
        f"{ADDRESS} has no notifying characteristic in service {PTT_Z_SERVICE}"
    )

    wanted = uuid16("fff4")
    spec = BleButtonSpec(ADDRESS, characteristic=wanted)
    with pytest.raises(NotAPttButton) as configured:
        BleDecoder(spec).plan(ptt_z())  # ffe1 is there, but not the one configured
    assert str(configured.value) == f"{ADDRESS} has no notifying characteristic {wanted}"

    silent = [Characteristic(PTT_Z_CHARACTERISTIC, PTT_Z_SERVICE, ("read",))]  # does not notify
    with pytest.raises(NotAPttButton):
        BleDecoder(BleButtonSpec(ADDRESS)).plan(silent)

    with pytest.raises(NotAPttButton):  # an SOS characteristic alone is no PTT button
        BleDecoder(BleButtonSpec(ADDRESS, characteristic=wanted, sos_characteristic=SOS)).plan(
            [Characteristic(SOS, PTT_Z_SERVICE, NOTIFY)]
        )


# --------------------------------------------------------------------------- notifications


def planned(spec: BleButtonSpec, *extra: Characteristic) -> BleDecoder:
    decoder = BleDecoder(spec)
    decoder.plan(ptt_z(*extra))
    return decoder


def test_ptt_z_values_press_and_release() -> None:
    decoder = planned(BleButtonSpec(ADDRESS))
    edges = [decoder.notification(PTT_Z_CHARACTERISTIC, v) for v in (b"\x01", b"\x00") * 2]
    assert edges == [PTT_DOWN, PTT_UP] * 2
    assert decoder.unknown == 0


def test_sos_notifications_are_emergency_edges_with_their_own_values() -> None:
    spec = BleButtonSpec(ADDRESS, sos_characteristic=SOS, sos_press=(b"\x02",))
    decoder = planned(spec, Characteristic(SOS, PTT_Z_SERVICE, NOTIFY))
    assert decoder.notification(SOS, b"\x02") == SOS_DOWN
    assert decoder.notification(SOS, b"\x00") == SOS_UP
    assert decoder.notification(SOS, b"\x01") is None  # the PTT's press value, not SOS's
    assert decoder.notification(PTT_Z_CHARACTERISTIC, b"\x01") == PTT_DOWN
    assert decoder.unknown == 1


def test_ascii_values_match_as_prefixes() -> None:
    press, release = bytes.fromhex("454c455431"), bytes.fromhex("454c455432")
    assert (press, release) == (b"ELET1", b"ELET2")
    decoder = planned(BleButtonSpec(ADDRESS, press=(press,), release=(release,)))
    assert decoder.notification(PTT_Z_CHARACTERISTIC, b"ELET1") == PTT_DOWN
    assert decoder.notification(PTT_Z_CHARACTERISTIC, b"ELET2\r\n") == PTT_UP  # with a tail
    assert decoder.notification(PTT_Z_CHARACTERISTIC, b"ELET") is None  # too short
    assert decoder.notification(PTT_Z_CHARACTERISTIC, b"\x01") is None
    assert decoder.unknown == 2


def test_several_values_for_one_edge() -> None:
    decoder = planned(BleButtonSpec(ADDRESS, press=(b"\x01", b"\x11"), release=(b"\x00", b"\x10")))
    got = [decoder.notification(PTT_Z_CHARACTERISTIC, v) for v in (b"\x11", b"\x10", b"\x01")]
    assert got == [PTT_DOWN, PTT_UP, PTT_DOWN]


def test_unknown_values_and_other_characteristics_are_ignored() -> None:
    decoder = planned(BleButtonSpec(ADDRESS))
    assert decoder.notification(PTT_Z_CHARACTERISTIC, b"\x07") is None
    assert decoder.notification(PTT_Z_CHARACTERISTIC, b"") is None
    assert decoder.unknown == 2  # counted
    assert decoder.notification(BATTERY_LEVEL, b"\x01") is None  # not subscribed as a button
    assert decoder.notification(uuid16("2a37"), b"\x01") is None
    assert decoder.unknown == 2  # not a button's notification: not counted either


def test_before_a_plan_nothing_is_a_button() -> None:
    decoder = BleDecoder(BleButtonSpec(ADDRESS))
    assert decoder.notification(PTT_Z_CHARACTERISTIC, b"\x01") is None


@given(
    st.sampled_from([PTT_Z_CHARACTERISTIC, SOS, BATTERY_LEVEL, "nonsense"]),
    st.binary(max_size=64),
)
def test_arbitrary_notifications_never_raise(uuid: str, data: bytes) -> None:
    spec = BleButtonSpec(ADDRESS, press=(b"ELET1",), release=(b"ELET2",), sos_characteristic=SOS)
    decoder = planned(spec, Characteristic(SOS, PTT_Z_SERVICE, NOTIFY))
    edge = decoder.notification(uuid, data)
    assert edge is None or edge[0] in (Button.PTT, Button.EMERGENCY)
    assert edge is None or uuid in (PTT_Z_CHARACTERISTIC, SOS)
    percent = battery_percent(data)
    assert percent is None or 0 <= percent <= 100


def test_battery_level_is_one_byte_of_percent() -> None:
    assert battery_percent(b"\x57") == 87
    assert battery_percent(b"\x64") == 100
    assert battery_percent(b"\x65") is None
    assert battery_percent(b"") is None


def test_what_looks_like_a_ptt_accessory() -> None:
    assert looks_like_ptt("Whatever", [PTT_Z_SERVICE.upper()])
    assert looks_like_ptt(None, [HAND_MIC_SERVICE])
    assert looks_like_ptt("B01-PTT", [])
    assert not looks_like_ptt("Heart rate", [uuid16("180d")])
    assert not looks_like_ptt(None, [])


def test_describe_state() -> None:
    assert describe_state(True, 87, "", 0) == "connected, battery 87%"
    assert describe_state(True, None, "", 0) == "connected"
    assert describe_state(False, None, "", 0) == "not connected"
    assert describe_state(False, 50, "link lost", 1) == "not connected: link lost"
    assert describe_state(False, None, "BleakDeviceNotFoundError", 3) == (
        "not connected (3 attempts): BleakDeviceNotFoundError"
    )


# --------------------------------------------------------------------------- the config


def ble_ptt(**fields: str) -> str:
    lines = "".join(f'{k} = "{v}"\n' for k, v in fields.items())
    return f'[[ptt]]\nkind = "ble"\n{lines}'


def refusal(text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    return str(caught.value)


def test_a_ble_ptt_from_the_config_file() -> None:
    config = parse_config(
        ble_ptt(
            address="aa-bb-cc-dd-ee-ff",
            service="fff0",
            characteristic="0xFFF4",
            press="454c455431",
            release="454c455432, 00",
            sos_characteristic="FFE2",
            sos_press="45 4c 45 54 33",
        )
    )
    spec = BleButtonSpec.from_config(config.ptt[0])
    assert spec == BleButtonSpec(
        ADDRESS,
        uuid16("fff0"),
        uuid16("fff4"),
        (b"ELET1",),
        (b"ELET2", b"\x00"),
        SOS,
        (b"ELET3",),
        (b"\x00",),
    )
    assert spec.source == f"ble:{ADDRESS}"


def test_a_ble_ptt_with_only_an_address_is_a_ptt_z_button() -> None:
    spec = BleButtonSpec.from_config(parse_config(ble_ptt(address=ADDRESS)).ptt[0])
    assert spec == BleButtonSpec(ADDRESS)
    assert (spec.service, spec.characteristic, spec.press, spec.release) == (
        PTT_Z_SERVICE,
        "",
        (b"\x01",),
        (b"\x00",),
    )


@pytest.mark.parametrize(
    ("fields", "key", "says"),
    [
        ({}, "ptt[0].address", "needs the accessory's address"),
        ({"address": "AA:BB:CC:DD:EE"}, "ptt[0].address", "is not a Bluetooth address"),
        ({"address": "GG:BB:CC:DD:EE:FF"}, "ptt[0].address", "is not a Bluetooth address"),
        (
            {"address": "AA:BB:CC:DD:EE:FF, 11:22:33:44:55:66"},
            "ptt[0].address",
            "is not a Bluetooth address",
        ),
        ({"address": ADDRESS, "service": "ffe"}, "ptt[0].service", "'ffe' is not a UUID"),
        (
            {"address": ADDRESS, "characteristic": "not-a-uuid"},
            "ptt[0].characteristic",
            "is not a UUID",
        ),
        ({"address": ADDRESS, "sos_characteristic": "xyz"}, "ptt[0].sos_characteristic", "UUID"),
        ({"address": ADDRESS, "press": "0g"}, "ptt[0].press", "'0g' is not a value in hex"),
        ({"address": ADDRESS, "release": "123"}, "ptt[0].release", "is not a value in hex"),
        ({"address": ADDRESS, "press": ""}, "ptt[0].press", "no value"),
        ({"address": ADDRESS, "sos_release": " , "}, "ptt[0].sos_release", "no value"),
    ],
)
def test_a_bad_ble_ptt_is_refused_with_one_clear_message(
    fields: dict[str, str], key: str, says: str
) -> None:
    message = refusal(ble_ptt(**fields))
    assert message.count(";") == 0, message  # one problem, one message
    assert f"{key}: " in message and says in message, message


def test_every_bad_ble_field_is_named() -> None:
    message = refusal(ble_ptt(address=ADDRESS, service="x", press="zz"))
    assert "ptt[0].service" in message and "ptt[0].press" in message


def test_bluetooth_buttons_are_checked_when_set() -> None:
    config = apply_overrides(Config(), {"bluetooth.buttons": f"{ADDRESS}, 11-22-33-44-55-66"})
    assert config.bluetooth.buttons == f"{ADDRESS}, 11-22-33-44-55-66"
    with pytest.raises(ConfigError) as caught:
        apply_overrides(Config(), {"bluetooth.buttons": f"{ADDRESS}, 11:22:33"})
    message = str(caught.value)
    assert message == (
        "bluetooth.buttons: '11:22:33' is not a Bluetooth address (AA:BB:CC:DD:EE:FF)"
    ), message
    assert refusal('[bluetooth]\nbuttons = "nope"\n').endswith(
        "bluetooth.buttons: 'nope' is not a Bluetooth address (AA:BB:CC:DD:EE:FF)"
    )


def test_config_values_that_would_misbehave_are_refused() -> None:
    """One characteristic for PTT and SOS, a release that a press value matches too (the button
    could never be released), one accessory bound twice: each refused in one line."""
    same = refusal(ble_ptt(address=ADDRESS, characteristic="ffe1", sos_characteristic="0xFFE1"))
    assert "ptt[0].sos_characteristic: the same as characteristic" in same
    overlap = refusal(ble_ptt(address=ADDRESS, press="01", release="0100"))
    assert "ptt[0].release: a value that press matches too" in overlap
    twice = ble_ptt(address=ADDRESS) + ble_ptt(address=ADDRESS.lower().replace(":", "-"))
    assert f"ptt[1].address: {ADDRESS} is ptt[0]'s already" in refusal(twice)
    bad = refusal(ble_ptt(address=ADDRESS, characteristic="nope", sos_characteristic="ffe1"))
    assert "ptt[0].characteristic" in bad and "\n" not in bad  # said once, no crash
