"""Follow-up messages (followup_service/routing/messages.py, the policy's templates): checked at load,
rendered sandboxed and autoescaped, in the respondent's locale or the default."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from followup_service.routing.messages import _HTML, _TEXT, Part, RenderFailed
from followup_service.routing.policy import DEFAULT_POLICY, PolicyError, load

POLICY = """
version: v1
default_locale: en
rules:
  - {name: detractors, when: {category: detractor}, action: ticket, template: sorry}
  - {name: others, action: thank_you, template: thanks}
templates:
  sorry:
    en:
      subject: "Sorry about the {{ score }}"
      text: "You said: {{ comment }}"
      html: "<p>You said: {{ comment }}</p>"
    de:
      subject: "Entschuldigung für die {{ score }}"
      text: "Sie schrieben: {{ comment }}"
  thanks:
    en: {subject: "Thanks", text: "Plan {{ attributes.plan | upper }}"}
"""


def policy(tmp_path: Path, text: str = POLICY):  # type: ignore[no-untyped-def]
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    return load(path)


def variables(**extra: object) -> dict[str, object]:
    return {"score": 2, "comment": "<script>alert(1)</script> & co", "attributes": {}, **extra}


def test_a_message_is_rendered_in_the_respondent_s_locale_or_the_default(tmp_path: Path) -> None:
    loaded = policy(tmp_path)
    english = loaded.render("sorry", variables())
    assert (english.locale, english.subject) == ("en", "Sorry about the 2")
    assert english.body_text == "You said: <script>alert(1)</script> & co"  # text is text
    assert english.body_html == "<p>You said: &lt;script&gt;alert(1)&lt;/script&gt; &amp; co</p>"  # escaped
    german = loaded.render("sorry", variables(attributes={"locale": "de-AT"}))  # the language, without a de-AT
    assert (german.locale, german.subject, german.body_html) == ("de", "Entschuldigung für die 2", None)
    assert loaded.render("sorry", variables(attributes={"locale": "fr"})).locale == "en"


def test_a_template_that_fails_on_a_response_is_a_render_failure_not_a_crash(tmp_path: Path) -> None:
    loaded = policy(tmp_path)
    assert loaded.render("thanks", variables(attributes={"plan": "pro"})).body_text == "Plan PRO"
    with pytest.raises(RenderFailed, match="template thanks"):
        loaded.render("thanks", variables())  # no plan attribute: strict undefined


def test_the_sandbox_keeps_templates_away_from_python(tmp_path: Path) -> None:
    sneaky = POLICY.replace('"Thanks"', '"{{ score.__class__.__mro__ }}"')
    with pytest.raises(RenderFailed):
        policy(tmp_path, sneaky).render("thanks", variables(attributes={"plan": "x"}))


@pytest.mark.parametrize(
    ("change", "field", "problem"),
    [
        (
            ('{{ comment }}"\n      html', '{{ first_name }}"\n      html'),
            "templates.sorry.en.text",
            "unknown variable 'first_name'",
        ),
        (
            ("Sorry about the {{ score }}", "Sorry about the {{ score"),
            "templates.sorry.en.subject",
            "not a valid template",
        ),
        (("  thanks:\n    en:", "  thanks:\n    fr:"), "templates.thanks", "no 'en' version"),
        (("template: thanks", "template: thank"), "template", "unknown template 'thank'"),
    ],
)
def test_template_problems_are_refused_at_load(
    tmp_path: Path, change: tuple[str, str], field: str, problem: str
) -> None:
    assert change[0] in POLICY
    with pytest.raises(PolicyError) as refused:
        policy(tmp_path, POLICY.replace(*change))
    assert any(p.field == field and problem in p.problem for p in refused.value.problems), refused.value.problems


def test_the_default_policy_has_a_message_for_every_follow_up(tmp_path: Path) -> None:
    default = load(DEFAULT_POLICY)
    for rule in default.rules:
        if rule.action == "none":  # the anonymous: nobody to send to
            continue
        assert rule.template is not None
        rendered = default.render(rule.template, variables(score=9, comment=None, referral_code="rabcdefghijklmnop"))
        assert rendered.subject and rendered.body_text and rendered.body_html


def test_any_runtime_error_of_a_template_is_a_render_failure(tmp_path: Path) -> None:
    adding = POLICY.replace('"Thanks"', "\"{{ score + 'x' }}\"")  # a TypeError, not a Jinja error
    with pytest.raises(RenderFailed, match="TypeError"):
        policy(tmp_path, adding).render("thanks", variables(attributes={"plan": "x"}))


TEMPLATE = (
    "{{ score }} {{ category }} {% if comment %}{{ comment }}{% endif %} {{ attributes.get('plan', '-') }}"
    " {{ referral_code or '' }}"
)


@given(
    st.lists(
        st.fixed_dictionaries(
            {
                "score": st.integers(0, 10),
                "category": st.sampled_from(["promoter", "passive", "detractor"]),
                "comment": st.none() | st.text(max_size=5),
                "channel": st.sampled_from(["web", "email"]),
                "attributes": st.dictionaries(st.sampled_from(["plan", "region"]), st.sampled_from(["a", "<b>"])),
                "referral_code": st.none() | st.sampled_from(["r1", "r2"]),
            }
        ),
        max_size=30,
    )
)
def test_a_cached_part_renders_what_jinja_renders(contexts: list[dict[str, object]]) -> None:
    # Parts cache by the values of the variables they read (not channel, here): a cached text must be
    # exactly what Jinja renders for every context, in any order.
    for env in (_TEXT, _HTML):
        part = Part(env, TEMPLATE)
        assert part.reads == ("attributes", "category", "comment", "referral_code", "score")
        for context in contexts:
            assert part.render(context) == env.from_string(TEMPLATE).render(context)
