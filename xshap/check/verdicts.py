"""The verdicts of a cross-check, per sample and output, against one reference (see the README's table)."""

AGREE = "AGREE"  # the reference is complete and equals xshap within tolerance
REFERENCE_INCOMPLETE = "REFERENCE_INCOMPLETE"  # the reference's values do not add up; xshap's do
RULE_DIFFERENCE = "RULE_DIFFERENCE"  # both complete; the reference applies a known rule of its own
DISAGREE = "DISAGREE"  # both complete, values differ, and no known rule difference explains it
REFERENCE_ERROR = "REFERENCE_ERROR"  # the reference raised

# worst first: the order in which a report's overall verdict is chosen
SEVERITY = (REFERENCE_ERROR, REFERENCE_INCOMPLETE, DISAGREE, RULE_DIFFERENCE, AGREE)
