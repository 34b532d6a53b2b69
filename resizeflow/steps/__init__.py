"""The work of each workflow step, given a :class:`~resizeflow.steps.context.StepContext`.

A step runs inside one transaction that holds its migration and instance rows
locked; everything it changes in the database commits or rolls back together,
and every driver call it makes is safe to repeat.
"""
