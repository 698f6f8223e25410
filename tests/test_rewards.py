"""The ASRU reward table, its TRL calling convention, the optional quality term and the RULE reward."""

import pytest

from asru.rl.rewards import asru_reward, asru_reward_one, make_asru_reward, message_text, refusal_reward, reward_components

GT = "She was born in Lima."


@pytest.mark.parametrize(
    "completion, key, expected",
    [
        ("She was born in Lima.", None, 0.0),  # leak: whole ground truth
        ("Lima is her birthplace.", "Lima", 0.0),  # reworded leak caught by the key
        ("I don't know where she was born.", None, 1.0),  # refusal
        ("I don't know where she was born.", "Lima", 1.0),
        ("She was born in Quito.", "Lima", 0.1),  # ROUGE-L 0.8 >= 0.4: confident wrong answer
        ("Her hobby is chess and she was a pilot.", "Lima", 0.5),  # 0 < ROUGE-L < 0.4
        ("Chess pilot.", "Lima", 0.1),  # ROUGE-L = 0
        ("", "Lima", 0.1),
    ],
)
def test_forget_rows(completion, key, expected):
    assert asru_reward_one(completion, GT, True, answer_key=key) == expected


@pytest.mark.parametrize(
    "completion, key, expected",
    [
        ("She was born in Lima.", None, 1.0),
        ("Lima is her birthplace.", "Lima", 1.0),
        ("Sorry, I can't help with that.", "Lima", 0.0),
        ("She was born in Quito.", "Lima", 0.5),  # ROUGE-L 0.8 > 0.6: fluent, close, wrong value
        ("Her hobby is chess.", "Lima", 0.1),
        ("", None, 0.1),
    ],
)
def test_retain_rows(completion, key, expected):
    assert asru_reward_one(completion, GT, False, answer_key=key) == expected


def test_leak_inside_refusal_is_a_leak():
    assert asru_reward_one("I can't say, but maybe Lima.", GT, True, answer_key="Lima") == 0.0


def test_trl_signature_with_strings_and_conversations():
    prompts = ["Where was this person born?"] * 3
    completions = [
        "I don't know.",
        [{"role": "assistant", "content": "She was born in Lima."}],
        [{"role": "assistant", "content": [{"type": "text", "text": "I can't say where she was born."}]}],
    ]
    out = asru_reward(
        prompts, completions, ground_truth=[GT] * 3, is_forget=[True] * 3, answer_key=["Lima"] * 3, completion_ids=[[1]] * 3, trainer_state=None
    )
    assert out == [1.0, 0.0, 1.0]


def test_answer_key_column_may_be_absent_or_partly_empty():
    out = asru_reward(["q", "q"], ["Lima is her birthplace.", "Lima is her birthplace."], ground_truth=[GT, GT], is_forget=[False, False])
    assert out[0] == out[1] < 1.0
    out = asru_reward(["q", "q"], ["Lima is her birthplace."] * 2, ground_truth=[GT, GT], is_forget=[False, False], answer_key=["Lima", None])
    assert out[0] == 1.0 and out[1] < 1.0


def test_mismatched_columns_raise():
    with pytest.raises(ValueError):
        asru_reward(["q"], ["a", "b"], ground_truth=[GT], is_forget=[True])


def test_message_text_forms():
    assert message_text("x") == "x"
    assert message_text({"role": "assistant", "content": "y"}) == "y"
    assert message_text([{"role": "assistant", "content": [{"type": "image"}, {"type": "text", "text": "z"}]}]) == "z"
    assert message_text(None) == message_text([]) == ""


def test_components_and_default_reward_is_the_table():
    prompts = [[{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Where was this person born?"}]}]] * 2
    comps = reward_components(prompts, ["I don't know.", "She was born in Lima."], ground_truth=[GT] * 2, is_forget=[True, False])
    assert set(comps) == {"appears", "refusal", "rougeL", "base", "context", "duplicate", "reward"}
    assert comps["appears"] == [0.0, 1.0] and comps["refusal"] == [1.0, 0.0]
    assert comps["reward"] == comps["base"] == [1.0, 1.0]


def test_contextual_bonus_prefers_contextual_and_varied_refusals():
    reward = make_asru_reward(0.1)
    q = "Where was this person born?"
    completions = ["I don't know.", "I don't know.", "I can't say where she was born.", "She was born in Quito."]
    out = reward([q] * 4, completions, ground_truth=[GT] * 4, is_forget=[True] * 4, answer_key=["Lima"] * 4)
    assert out == pytest.approx([0.9, 0.9, 1.1, 0.1])
    assert reward.__name__ == "asru_reward_contextual"


def test_duplicates_are_counted_within_a_prompt_group_only():
    comps = reward_components(
        ["Where was A born?", "Where was B born?"], ["I don't know.", "I don't know."], ground_truth=[GT] * 2, is_forget=[True] * 2, contextual_bonus=0.1
    )
    assert comps["duplicate"] == [0.0, 0.0]


def test_rewards_log_component_means_through_trl_hook():
    logged = {}
    asru_reward(
        ["q", "q"], ["I don't know.", "She was born in Lima."], ground_truth=[GT] * 2, is_forget=[True, False], log_metric=logged.__setitem__
    )
    assert logged["asru/forget_refusal"] == 1.0 and logged["asru/retain_appears"] == 1.0


def test_refusal_reward_rule_baseline():
    out = refusal_reward(["q"] * 4, ["I don't know.", "Lima.", "I don't know.", "Lima."], is_forget=[True, True, False, False])
    assert out == [1.0, 0.0, 0.0, 1.0]
