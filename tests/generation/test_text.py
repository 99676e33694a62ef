from llama2.generation.detokenize import IncrementalDecoder
from llama2.generation.stopping import StopStringChecker


def test_incremental_decoding_never_splits_a_multibyte_character():
    # A toy byte-level "tokenizer": token = one byte of UTF-8.
    data = "añ🙂!".encode()

    def decode(ids):
        return bytes(ids).decode("utf-8", errors="replace")

    decoder = IncrementalDecoder(decode)
    deltas = [decoder.push(b) for b in data]
    assert "".join(deltas) == "añ🙂!"
    assert all("\ufffd" not in d for d in deltas)
    assert deltas[3:6] == ["", "", ""]  # the emoji's first three bytes are held back


def test_prefix_keeps_the_leading_space_of_the_first_new_token():
    pieces = {1: "▁Once", 2: "▁upon"}

    def decode(ids):
        return "".join(pieces[i] for i in ids).replace("▁", " ").lstrip(" ")

    decoder = IncrementalDecoder(decode, prefix=[1])
    assert decoder.push(2) == " upon"


def test_stop_strings_cut_output_and_hold_back_possible_starts():
    checker = StopStringChecker(("\nUser:",))
    assert checker.update("Hello\nUs") == ("Hello", False)
    assert checker.update("Hello\nUser: hi") == ("Hello", True)
    assert checker.final_text == "Hello"
    assert StopStringChecker(()).update("abc") == ("abc", False)
