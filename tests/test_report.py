"""gradschool.projects.report.code_lines counts code, not docstrings, comments or blank lines."""

from gradschool.projects.report import code_lines


def _three_lines(x):
    """A docstring
    over two lines."""
    # a comment

    y = x + 1  # a comment after code counts as code
    return y


class _Small:
    """A class docstring."""

    def method(self):
        return 1


def test_counts_only_code():
    assert code_lines(_three_lines) == 3  # def, y = ..., return


def test_methods_and_classes():
    assert code_lines(_Small.method) == 2
    assert code_lines(_Small) == 3  # class line, def, return


def _no_docstring(x):
    return "# not a comment"


def test_a_string_that_looks_like_a_comment_is_code():
    assert code_lines(_no_docstring) == 2
