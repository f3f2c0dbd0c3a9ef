"""``python -m lightkd fetch``: download the offline data and teacher into the cache."""
import sys

from . import data, zoo
from .common import SourceMissing, cache_dir


def fetch() -> None:
    reviews = data.load_text_classification("movie_reviews")
    print(f"movie_reviews: {len(reviews.train)}/{len(reviews.dev)}/{len(reviews.test)} sentences")
    print(f"snippets: {len(data.load_unlabelled_text('snippets'))} unlabelled sentences")
    print(f"teacher minilm-l6: {zoo.model_path('minilm-l6')}")
    try:
        images = data.load_images("fashion_mnist")
        print(f"fashion_mnist: {len(images.train)}/{len(images.dev)}/{len(images.test)} images")
    except SourceMissing as e:
        print(f"fashion_mnist: not available ({e})")
    print(f"cache: {cache_dir()}")


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] != ["fetch"]:
        print("usage: python -m lightkd fetch", file=sys.stderr)
        return 2
    fetch()
    return 0


if __name__ == "__main__":
    sys.exit(main())
