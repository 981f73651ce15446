"""(being written: default alert rules for every new deployment)"""


def connect() -> None:
    pass
