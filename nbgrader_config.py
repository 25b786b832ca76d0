# Lets `nbgrader ...` and the formgrader work from the repository root.
load_subconfig("autograder/nbgrader_config.py")  # noqa: F821
