"""The course's autograder: nbgrader does the grading; this package makes it safe for a class.

``python -m autograder release`` regenerates ``curriculum/`` from ``solutions/``;
``python -m autograder grade ASSIGNMENT SUBMISSIONS --out OUT`` grades a class.
"""
