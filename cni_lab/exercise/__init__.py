"""Exercises that grade themselves: a lab built, broken on purpose, and a learner's fix proved.

    spec.py        an exercise file → a validated Exercise (pure; `exercise validate`)
    assertions.py  what `grade` asserts, and each judged on its fact (pure)
    library.py     the shipped exercises and a teacher's folder
    session.py     start (up, then break), hints given, stop: recorded in the lab's state folder
    facts.py       one thin kernel reader per kind of assertion
    grading.py     check + assertions → a Grade
"""
