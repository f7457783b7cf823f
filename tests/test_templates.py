import pytest

from masa_trl.templates import (
    DEFAULT_META_SYSTEM_PROMPT,
    META_PROMPT_TEMPLATE,
    SOLUTION_INSTRUCTION,
    add_notion_hint,
    meta_prompt,
    solution_prompt,
)


PROBLEM = r"Let $f(x) = \frac{x^{2}}{2}$. Find $f(4)$ for the set $\{1, 2\}$."


class TestSolutionPrompt:
    def test_problem_then_instruction_as_one_user_message(self):
        assert solution_prompt("What is 1+1?") == [
            {
                "role": "user",
                "content": "What is 1+1? Let's think step by step and output the final answer within \\boxed{}.",
            }
        ]

    def test_latex_braces_are_kept_verbatim(self):
        assert solution_prompt(PROBLEM)[0]["content"] == f"{PROBLEM} {SOLUTION_INSTRUCTION}"

    @pytest.mark.parametrize("problem", ["", "   "])
    def test_empty_problem_is_rejected(self, problem):
        with pytest.raises(ValueError, match="empty"):
            solution_prompt(problem)

    def test_non_string_problem_is_rejected(self):
        with pytest.raises(TypeError, match="problem"):
            solution_prompt(None)


class TestMetaPrompt:
    def test_default_layout_matches_appendix_a(self):
        messages = meta_prompt("What is 1+1?")
        assert messages[0] == {"role": "system", "content": DEFAULT_META_SYSTEM_PROMPT}
        assert DEFAULT_META_SYSTEM_PROMPT == "You are a helpful assistant."
        assert messages[1]["role"] == "user"
        content = messages[1]["content"]
        assert content.startswith("Think step-by-step between <meta> and </meta>, ensuring comprehensive")
        assert "- math_notion (list[str])\n" in content
        assert "- pass_rate (integer from 0 to 8)\n" in content
        assert "- solution_length (integer from 128 to 8192)\n" in content
        assert content.endswith("\n\nProblem: What is 1+1?")

    def test_template_has_no_leading_or_trailing_whitespace(self):
        assert META_PROMPT_TEMPLATE == META_PROMPT_TEMPLATE.strip()
        assert all(line == line.strip() for line in META_PROMPT_TEMPLATE.splitlines())

    def test_problem_is_inserted_without_solution_instruction(self):
        content = meta_prompt(PROBLEM)[-1]["content"]
        assert content.endswith(f"Problem: {PROBLEM}")
        assert SOLUTION_INSTRUCTION not in content
        assert "boxed" not in content

    def test_scale_and_lengths_are_parameters(self):
        content = meta_prompt("p", pass_rate_scale=16, max_length=4096, min_length=64)[-1]["content"]
        assert "integer from 0 to 16" in content
        assert "integer from 64 to 4096" in content

    @pytest.mark.parametrize("system_prompt", [None, ""])
    def test_system_message_can_be_left_out(self, system_prompt):
        messages = meta_prompt("p", system_prompt=system_prompt)
        assert [message["role"] for message in messages] == ["user"]

    def test_custom_template_with_escaped_braces(self):
        messages = meta_prompt("p", template='Answer as {{"pass_rate": n}} with n <= {pass_rate_scale}: {problem}')
        assert messages[-1]["content"] == 'Answer as {"pass_rate": n} with n <= 8: p'

    def test_max_length_below_min_length_is_rejected(self):
        with pytest.raises(ValueError, match=r"`max_length` \(100\).*`min_length` \(128\)"):
            meta_prompt("p", max_length=100)

    @pytest.mark.parametrize(
        "template, message",
        [
            ("Solve this.", r"\{problem\}"),
            ('Reply {"pass_rate": 1}. {problem}', "unknown placeholders"),
            ("{problem} and {answer}", r"unknown placeholders \['answer'\]"),
            ("{problem} {}", "unknown placeholders"),
            ("{problem} }", r"Write literal braces as '\{\{' and '\}\}'"),
            ("{problem", "not a valid str.format template"),
        ],
    )
    def test_bad_template_is_rejected(self, template, message):
        with pytest.raises(ValueError, match=message):
            meta_prompt("p", template=template)

    @pytest.mark.parametrize("name", ["pass_rate_scale", "max_length", "min_length"])
    @pytest.mark.parametrize("value, error", [(0, ValueError), (-1, ValueError), (True, TypeError), (2.0, TypeError)])
    def test_bad_integer_arguments_are_rejected(self, name, value, error):
        with pytest.raises(error, match=name):
            meta_prompt("p", **{name: value})


class TestAddNotionHint:
    def test_appends_one_sentence_to_last_user_message(self):
        prompt = [
            {"role": "system", "content": "sys"},
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "reply"},
            {"role": "user", "content": "Solve it."},
        ]
        hinted = add_notion_hint(prompt, ["A", "B", "C"])
        assert hinted[:3] == prompt[:3]
        assert hinted[3] == {
            "role": "user",
            "content": "Solve it.\n\nHint: the following notions may help: A, B and C.",
        }

    def test_input_is_not_mutated(self):
        prompt = solution_prompt("Solve it.")
        original = [dict(message) for message in prompt]
        hinted = add_notion_hint(prompt, ["parity"])
        assert prompt == original
        assert hinted is not prompt and hinted[0] is not prompt[0]

    def test_single_and_two_notions(self):
        assert add_notion_hint("Q", ["parity"]) == "Q\n\nHint: the following notion may help: parity."
        assert add_notion_hint("Q", ["a", "b"]) == "Q\n\nHint: the following notions may help: a and b."

    def test_notions_are_stripped_and_deduplicated_case_insensitively(self):
        hinted = add_notion_hint("Q", ["  Modular arithmetic ", "modular ARITHMETIC", "", "  ", "parity\n"])
        assert hinted == "Q\n\nHint: the following notions may help: Modular arithmetic and parity."

    @pytest.mark.parametrize("notions", [[], ["", "   "]])
    def test_no_notion_returns_an_unchanged_copy(self, notions):
        prompt = solution_prompt("Solve it.")
        hinted = add_notion_hint(prompt, notions)
        assert hinted == prompt and hinted is not prompt
        assert add_notion_hint("Q", notions) == "Q"

    def test_list_content_gets_a_text_part(self):
        prompt = [{"role": "user", "content": [{"type": "text", "text": "Q"}]}]
        hinted = add_notion_hint(prompt, ["parity"])
        assert hinted[0]["content"][-1] == {"type": "text", "text": "\n\nHint: the following notion may help: parity."}
        assert prompt[0]["content"] == [{"type": "text", "text": "Q"}]

    def test_prompt_without_user_message_is_rejected(self):
        with pytest.raises(ValueError, match="no user message"):
            add_notion_hint([{"role": "system", "content": "s"}], ["parity"])

    def test_single_string_notions_are_rejected(self):
        with pytest.raises(TypeError, match="list of strings"):
            add_notion_hint("Q", "parity")
