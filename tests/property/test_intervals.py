from hypothesis import given
from hypothesis import strategies as st

from marketlake.core.intervals import clip, merge, subtract, total

ivs = st.lists(st.tuples(st.integers(0, 60), st.integers(0, 60)).map(lambda t: (min(t), max(t))), max_size=8)


def points(intervals):
    return {x for s, e in intervals for x in range(s, e)}


@given(ivs)
def test_merge_covers_the_same_points_with_disjoint_sorted_intervals(a):
    m = merge(a)
    assert points(m) == points(a)
    assert all(s < e for s, e in m)
    assert all(m[i][1] < m[i + 1][0] for i in range(len(m) - 1))
    assert total(a) == len(points(a))


@given(ivs, ivs)
def test_subtract_is_set_difference(a, b):
    assert points(subtract(a, b)) == points(a) - points(b)
    assert subtract(a, b) == merge(subtract(a, b))


@given(ivs, st.integers(0, 60), st.integers(0, 60))
def test_clip_is_intersection_with_a_window(a, lo, hi):
    assert points(clip(a, lo, hi)) == {x for x in points(a) if lo <= x < hi}
