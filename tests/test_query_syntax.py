"""The short search syntax (`shoebox.query_syntax`): what each form parses to, and how each mistake is told."""

from __future__ import annotations

import pytest

from shoebox.query_syntax import MAX_LENGTH, MAX_TERMS, QuerySyntaxError, QueryTerm, parse_query

UUID = "123e4567-e89b-12d3-a456-426614174000"


def text(value: str, weight: float = 1.0) -> QueryTerm:
    return QueryTerm("text", value, weight)


def from_api(entry: dict) -> QueryTerm:
    (kind,) = entry.keys() - {"weight"}
    return QueryTerm(kind, entry[kind], entry["weight"])


def syntax_error(query: str) -> QuerySyntaxError:
    with pytest.raises(QuerySyntaxError) as caught:
        parse_query(query)
    return caught.value


# --- what parses, and to what


def test_the_issue_example_gives_weighted_texts() -> None:
    assert parse_query("2:dog + beach - people") == [text("dog", 2), text("beach"), text("people", -1)]


def test_a_plain_query_is_one_text_of_weight_one() -> None:
    assert parse_query("dog on a beach") == [text("dog on a beach")]


def test_a_run_of_words_is_one_text() -> None:
    assert parse_query("sunset over water + dog") == [text("sunset over water"), text("dog")]


def test_whitespace_between_words_collapses_to_one_space() -> None:
    assert parse_query("  sunset \t over\n  water  +\tdog ") == [text("sunset over water"), text("dog")]


def test_hyphens_inside_words_are_part_of_the_word() -> None:
    assert parse_query("t-shirt + well-lit room - dog-friendly") == [
        text("t-shirt"),
        text("well-lit room"),
        text("dog-friendly", -1),
    ]


def test_a_plus_inside_a_word_is_part_of_the_word() -> None:
    assert parse_query("c++ and dog+cat") == [text("c++ and dog+cat")]


def test_an_operator_needs_no_space_before_its_term() -> None:
    assert parse_query("dog -people +beach") == [text("dog"), text("people", -1), text("beach")]


def test_an_operator_right_after_a_closing_quote_is_an_operator() -> None:
    assert parse_query('"dog"-people') == [text("dog"), text("people", -1)]


def test_a_trailing_hyphen_stays_in_its_word() -> None:
    assert parse_query("dog- people") == [text("dog- people")]


def test_a_leading_minus_makes_the_first_term_negative() -> None:
    assert parse_query("-people + dog") == [text("people", -1), text("dog")]


def test_a_leading_plus_is_allowed() -> None:
    assert parse_query("+dog") == [text("dog")]


def test_the_operator_sign_multiplies_the_weight() -> None:
    assert parse_query("dog - 2:people") == [text("dog"), text("people", -2)]


def test_a_leading_minus_multiplies_the_weight() -> None:
    assert parse_query("-0.5:people") == [text("people", -0.5)]


def test_a_weight_may_start_with_a_decimal_point() -> None:
    assert parse_query(".5:dog") == [text("dog", 0.5)]


def test_a_weight_applies_to_the_whole_run_of_words() -> None:
    assert parse_query("3:dog on a beach") == [text("dog on a beach", 3)]


def test_a_number_colon_digit_is_a_word_not_a_weight() -> None:
    assert parse_query("12:30 + 16:9 screen") == [text("12:30"), text("16:9 screen")]


def test_a_number_colon_inside_a_word_is_not_a_weight() -> None:
    assert parse_query("a2:dog") == [text("a2:dog")]


def test_a_quoted_term_that_starts_with_a_digit_takes_a_weight() -> None:
    assert parse_query('2:"3d printer"') == [text("3d printer", 2)]


def test_quotes_give_literal_text_with_operators_and_colons() -> None:
    assert parse_query('"c++ book" - "2:dog + id:x"') == [text("c++ book"), text("2:dog + id:x", -1)]


def test_quotes_keep_their_inner_whitespace() -> None:
    assert parse_query('"a  b"') == [text("a  b")]


def test_quotes_unescape_quotes_and_backslashes() -> None:
    assert parse_query(r'"say \"cheese\" \\o/"') == [text('say "cheese" \\o/')]


def test_quotes_keep_any_other_backslash() -> None:
    assert parse_query(r'"C:\pics"') == [text(r"C:\pics")]


def test_an_id_is_an_image_id_term() -> None:
    assert parse_query(f"id:{UUID}") == [QueryTerm("image_id", UUID)]


def test_an_id_is_normalised_to_lower_case_with_dashes() -> None:
    assert parse_query("id:" + UUID.upper().replace("-", "")) == [QueryTerm("image_id", UUID)]


def test_an_id_takes_a_weight_and_a_sign() -> None:
    assert parse_query(f"dog - 2:id:{UUID}") == [text("dog"), QueryTerm("image_id", UUID, -2)]


def test_a_photo_path_runs_to_the_next_whitespace() -> None:
    assert parse_query("photo:~/pics/a-b+c.jpg - cat") == [
        QueryTerm("photo", "~/pics/a-b+c.jpg"),
        text("cat", -1),
    ]


def test_a_quoted_photo_path_may_hold_spaces() -> None:
    assert parse_query(r'0.5:photo:"my pics/\"best\".jpg"') == [QueryTerm("photo", 'my pics/"best".jpg', 0.5)]


def test_keywords_are_lower_case_only() -> None:
    assert parse_query("ID:card Photo:booth") == [text("ID:card Photo:booth")]


def test_the_most_terms_parse() -> None:
    assert len(parse_query(" + ".join(["dog"] * MAX_TERMS))) == MAX_TERMS


def test_the_longest_query_parses() -> None:
    assert parse_query("a" * MAX_LENGTH) == [text("a" * MAX_LENGTH)]


# --- as_api


def test_as_api_gives_the_search_api_entries() -> None:
    assert [term.as_api() for term in parse_query(f"2:dog - id:{UUID}")] == [
        {"text": "dog", "weight": 2.0},
        {"image_id": UUID, "weight": -1.0},
    ]


def test_as_api_round_trips_text_and_image_terms() -> None:
    terms = parse_query(f'0.5:"c++ book" + beach - 3:id:{UUID}')
    assert [from_api(term.as_api()) for term in terms] == terms


def test_as_api_refuses_a_photo_term() -> None:
    with pytest.raises(ValueError, match="uploaded"):
        QueryTerm("photo", "cat.jpg").as_api()


# --- errors: where, and what was expected


def test_an_error_names_the_column_and_draws_a_caret() -> None:
    error = syntax_error("dog + - cat")
    assert error.column == 7
    assert str(error).splitlines() == [
        "column 7: two operators in a row; expected a term after '+'",
        "  dog + - cat",
        "        ^",
    ]


def test_an_error_is_a_value_error() -> None:
    assert isinstance(syntax_error("dog +"), ValueError)


def test_an_empty_query_is_an_error() -> None:
    assert syntax_error("").reason == "the query is empty"


def test_a_blank_query_is_an_error() -> None:
    assert syntax_error(" \t ").reason == "the query is empty"


def test_a_dangling_operator_is_an_error() -> None:
    error = syntax_error("dog +")
    assert (error.column, error.reason) == (6, "expected a term after '+', but the query ends there")


def test_a_lone_operator_is_an_error() -> None:
    assert syntax_error("-").reason == "expected a term after '-', but the query ends there"


def test_two_operators_in_a_row_are_an_error() -> None:
    assert syntax_error("--dog").reason == "two operators in a row; expected a term after '-'"


def test_an_unclosed_quote_is_an_error_at_the_quote() -> None:
    error = syntax_error('dog + "cat')
    assert (error.column, error.reason) == (7, 'this quote is never closed; add a " at the end of the text')


def test_a_quote_ending_in_an_escape_is_unclosed() -> None:
    assert "never closed" in syntax_error(r'"cat\"').reason


def test_empty_quotes_are_an_error() -> None:
    assert syntax_error('dog + ""').reason == "the quotes hold nothing; put the text between them"


def test_a_bad_uuid_is_an_error() -> None:
    error = syntax_error("id:42")
    assert error.column == 4
    assert error.reason.startswith("'42' is not an image id; expected a UUID such as")


def test_an_empty_id_is_an_error() -> None:
    assert syntax_error("id:").reason.startswith("id: needs an image id")


def test_a_space_after_id_is_an_error() -> None:
    assert syntax_error(f"id: {UUID}").reason == "expected an image id right after id:, without a space"


def test_a_missing_photo_path_is_an_error() -> None:
    assert (
        syntax_error("photo:").reason == "expected a file path right after photo:, but the query ends there"
    )


def test_a_space_after_photo_is_an_error() -> None:
    assert syntax_error("photo: cat.jpg").reason == "expected a file path right after photo:, without a space"


def test_a_zero_weight_is_an_error() -> None:
    assert syntax_error("dog + 0.0:cat").reason == "a weight of 0 means nothing; drop the term"


def test_a_weight_with_a_space_before_its_term_is_an_error() -> None:
    error = syntax_error("2: dog")
    assert (error.column, error.reason) == (
        3,
        "a weight is written right against its term, without a space: 2:dog",
    )


def test_a_weight_without_a_term_is_an_error() -> None:
    assert (
        syntax_error("dog + 2:").reason
        == "expected a term right after the weight 2:, but the query ends there"
    )


def test_a_weight_before_an_operator_is_an_error() -> None:
    assert syntax_error("2:-dog").reason == "expected a term right after the weight 2:, but found '-'"


def test_a_weight_inside_a_run_of_words_is_a_missing_operator() -> None:
    assert syntax_error("top 10: beaches").reason == (
        "expected + or - between two terms, but found the weight 10: (quote it to search for it as text)"
    )


def test_a_keyword_inside_a_run_of_words_is_a_missing_operator() -> None:
    assert syntax_error(f"dog id:{UUID}").reason.startswith(
        "expected + or - between two terms, but found 'id:"
    )


def test_two_quoted_terms_side_by_side_are_a_missing_operator() -> None:
    assert syntax_error('dog "cat"').reason == "expected + or - between two terms, but found '\"cat\"'"


def test_too_many_terms_is_an_error_at_the_first_extra_term() -> None:
    query = " + ".join(["dog"] * (MAX_TERMS + 1))
    error = syntax_error(query)
    assert (error.pos, error.reason) == (
        query.rindex("dog"),
        f"too many terms; a query holds at most {MAX_TERMS}",
    )


def test_too_long_a_query_is_an_error() -> None:
    assert syntax_error("a" * (MAX_LENGTH + 1)).reason == (
        f"the query is {MAX_LENGTH + 1} characters long; the most is {MAX_LENGTH}"
    )


def test_the_caret_stays_under_its_character_past_tabs_and_newlines() -> None:
    assert str(syntax_error("dog\t+\n-cat")).splitlines()[1:] == ["  dog + -cat", "        ^"]


def test_the_caret_line_of_a_long_query_is_a_window_around_the_error() -> None:
    query = "dog " * 100 + "+"
    _, shown, caret = str(syntax_error(query)).splitlines()
    assert len(shown) < 80
    assert shown[caret.index("^") - 1] == "+"
