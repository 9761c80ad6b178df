import json

import pytest

from allava.schema import DataError, load_records, make_record, write_records


def _write(path, obj):
    path.write_text(json.dumps(obj))
    return path


def test_round_trip_keeps_extra_fields(tmp_path):
    rec = make_record("r1", [("What is it?", "A cat.")], image="images/a.png", caption="orig", url="http://x")
    write_records(tmp_path / "a.json", [rec])
    back, skipped = load_records(tmp_path / "a.json")
    assert skipped == []
    assert back[0].to_json() == rec.to_json()
    assert back[0].conversations[0].value.startswith("<image>\n")
    assert back[0].extra == {"caption": "orig", "url": "http://x"}


@pytest.mark.parametrize(
    "record, message",
    [
        ({"id": "t1", "conversations": [{"from": "human", "value": "<image>\nhi"}, {"from": "gpt", "value": "x"}]}, "text-only record"),
        ({"id": "n1", "image": "a.png", "conversations": [{"from": "human", "value": "hi"}]}, "no assistant"),
        ({"id": "m1", "image": "a.png", "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "x"}]}, "exactly one '<image>'"),
        ({"id": "o1", "conversations": [{"from": "gpt", "value": "x"}, {"from": "human", "value": "y"}]}, "alternate"),
        ({"conversations": []}, "missing field 'id'"),
        ({"id": "r1", "conversations": [{"from": "bot", "value": "x"}]}, "expected 'human' or 'gpt'"),
    ],
)
def test_bad_records_name_file_and_id(tmp_path, record, message):
    path = _write(tmp_path / "bad.json", [record])
    with pytest.raises(DataError) as err:
        load_records(path)
    assert "bad.json" in str(err.value)
    assert message in str(err.value)
    if "id" in record:
        assert repr(record["id"]) in str(err.value)


def test_skip_bad_counts(tmp_path):
    good = make_record("g", [("q", "a")]).to_json()
    bad = {"id": "b", "conversations": [{"from": "human", "value": "q"}]}
    records, skipped = load_records(_write(tmp_path / "mix.json", [good, bad, good]), skip_bad=True)
    assert len(records) == 2 and len(skipped) == 1 and "'b'" in skipped[0]


def test_malformed_json_and_missing_file(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('[{"id": 1,')
    with pytest.raises(DataError, match="broken.json: malformed JSON"):
        load_records(path)
    with pytest.raises(DataError, match="file not found"):
        load_records(tmp_path / "nope.json")
