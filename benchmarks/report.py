"""Printing ratio rows: (what, value, goal)."""


def show(rows: list[tuple[str, float, str]]) -> list[tuple[str, float, str]]:
    for name, value, goal in rows:
        print(f"{name:48s} {value:7.3f}   goal {goal}")
    return rows
