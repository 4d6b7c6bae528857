"""The control-plane benchmark's simulated nodes read deflated answers without inflating the
pieces every node is sent alike (bench/sim_agents.py, SharedPieces): what they read must be
the answer's own bytes exactly, its length the whole answer's, and anything else must fall
back to inflating it whole."""
from __future__ import annotations

import os
import random
import sys
import zlib

from shoal.manager.deflated import compressed, stored, zlib_stream

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "bench"))
from sim_agents import SharedPieces, split_answer  # noqa: E402


def _answer(events: list[bytes], tail: bytes = b'"digest":"d1","ep":"e:9","pp":"p:9"}'):
    own_head = b'{"rev":3,"tasks":[{"id":"t1"}],"endpoints":{"epoch":"e","seq":9,"full":false,"events":['
    items: list = [own_head]
    whole = own_head
    for i, chunk in enumerate(events):
        if i:
            items.append(b",")
            whole += b","
        items.append(compressed(chunk))
        whole += chunk
    items += [b']},"peers":{"epoch":"p","seq":9,"full":false,"events":[]},', tail]
    whole += b']},"peers":{"epoch":"p","seq":9,"full":false,"events":[]},' + tail
    return b"".join(zlib_stream(items)), whole


def test_an_answer_is_read_without_its_shared_pieces_and_each_piece_is_inflated_once():
    rnd = random.Random(3)
    chunks = [b",".join(b'[1,%d,"10.210.%d.%d"]' % (i, rnd.randint(0, 255), rnd.randint(2, 254))
                        for i in range(n)) for n in (5000, 1, 300, 70_000)]
    sp = SharedPieces()
    for round_ in range(3):
        body, whole = _answer(chunks)
        got = sp.skim(body)
        assert got is not None
        text, total = got
        assert total == len(whole) and text == whole.replace(b",".join(chunks), b",,,")  # the own bytes, in order
        assert split_answer(text, full=False) == {
            **{k: v for k, v in split_answer(whole, full=True).items() if k not in ("endpoints", "peers")},
            "endpoints": {"epoch": "e", "seq": 9}, "peers": {"epoch": "p", "seq": 9}}
    assert sp.inflated <= len(chunks) and sp.skimmed >= 2 * len(chunks) - 1 and sp.whole == 0


def test_what_does_not_read_as_the_managers_answers_do_is_left_to_inflating_whole():
    sp = SharedPieces()
    body, whole = _answer([b"x" * 10_000, b"y" * 3])
    assert sp.skim(body[:-1] + bytes([body[-1] ^ 1])) is None  # its Adler-32 is not the content's
    assert sp.skim(body[:-9]) is None  # cut short
    assert sp.skim(b"\x78\x9c" + body[2:]) is not None  # (another level's header is still zlib's)
    assert sp.skim(zlib.compress(whole)) is None  # one compressed stream: no stored blocks to read
    assert sp.skim(b"".join(zlib_stream([stored(whole)]))) == (whole, len(whole))
    assert sp.skim(b"not zlib at all") is None
