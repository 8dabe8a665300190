"""Progress bars: time left from the rate of the work, not from an engine's start."""

import time

from lift_local.console import Progress


def test_the_first_time_left_ignores_how_long_the_first_item_took():
    bar = Progress(100, "replies", "reply")
    time.sleep(0.3)  # an engine starting: no item done yet
    bar.update(1)
    assert bar.format_dict["rate"] is None  # no estimate rather than a wild one
    for _ in range(3):
        time.sleep(0.01)
        bar.update(1)
    rate = (bar.n - bar.format_dict["initial"]) / bar.format_dict["elapsed"]
    assert rate > 30  # about 100 items/s: the 0.3 s before the first item are not in it
    bar.close()


def test_items_already_done_are_not_counted_as_work_done_now():
    bar = Progress(10, "replies", "reply", initial=8)
    bar.update(1)
    assert bar.format_dict["initial"] == 9 and bar.n == 9
    bar.close()
