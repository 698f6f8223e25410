"""Linear probe: per decoder layer, a logistic regression (scikit-learn) trained on retain people's hidden states at
the last prompt token of their generation questions to predict the attribute value, scored on the forget people's
held-out questions. A model that still represents the fact, whatever it says, is read out here. The best layer is
picked on the forget people (the attacker's best case; the same rule for the oracle, its control). Needs answer
keys (the world's attributes); skipped with one note on data without them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from asru.attacks.base import Attack, AttackEnv, Target
from asru.attacks.facts import attribute_of
from asru.attacks.measure import gen_items
from asru.eval.mllmu import prompt_for
from asru.steering.hooks import all_layers_last_hidden


@dataclass
class ProbeConfig:
    c: float = 1.0  # inverse regularisation strength (scikit-learn's default)
    max_iter: int = 2000


def probe_accuracy(x_train, attrs_train, y_train, x_test, attrs_test, y_test, c: float = 1.0,
                   max_iter: int = 2000) -> list[float]:
    """Per layer: accuracy on the test rows of one probe per attribute (standardised features, multinomial
    logistic regression) fitted on the train rows of that attribute. `x_*`: [layers, N, H] arrays. A value never
    seen in training cannot be predicted (counted wrong); an attribute with one training value is not probed."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    attrs_train, attrs_test = np.asarray(attrs_train), np.asarray(attrs_test)
    y_train, y_test = np.asarray(y_train), np.asarray(y_test)
    per_layer = []
    for layer in range(x_train.shape[0]):
        correct = np.zeros(len(y_test))
        for attribute in sorted(set(attrs_test)):
            tr, te = attrs_train == attribute, attrs_test == attribute
            if len(set(y_train[tr])) < 2:
                continue
            clf = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=max_iter))
            clf.fit(x_train[layer][tr], y_train[tr])
            correct[te] = clf.predict(x_test[layer][te]) == y_test[te]
        per_layer.append(float(correct.mean()) if len(correct) else 0.0)
    return per_layer


class Probe(Attack):
    name = "probe"
    description = "per-layer logistic-regression probe (trained on retain people) for the attribute value"
    metric = "probe_acc"
    Config = ProbeConfig

    def run(self, target: Target, env: AttackEnv, notes: list[str]) -> dict[str, dict]:
        test = [i for i in gen_items(env.held_out) if i.meta.get("key") and attribute_of(i.question)]
        train = env.cache.get("probe_train")
        if train is None:
            from asru.data.mllmu import eval_items, retain_split_for

            train = env.cache["probe_train"] = [
                i for i in eval_items(env.data_dir, retain_split_for(env.forget_split))
                if i.task == "gen" and i.meta.get("key") and attribute_of(i.question)]
        if not test or not train:
            notes.append("probe skipped: the data has no answer keys (attribute values) to probe for")
            return {}
        with target.loaded() as (model, processor):
            x_train = all_layers_last_hidden(model, processor, [(prompt_for(i), i.image) for i in train],
                                             env.settings.batch_size).numpy()
            x_test = all_layers_last_hidden(model, processor, [(prompt_for(i), i.image) for i in test],
                                            env.settings.batch_size).numpy()
        per_layer = probe_accuracy(x_train, [attribute_of(i.question) for i in train], [i.meta["key"] for i in train],
                                   x_test, [attribute_of(i.question) for i in test], [i.meta["key"] for i in test],
                                   self.config.c, self.config.max_iter)
        best = int(np.argmax(per_layer))
        return {"probe": {"probe_acc": per_layer[best], "best_layer": best, "per_layer": per_layer,
                          "n_train": len(train), "n_test": len(test), "gen_contains": None, "mc_lik": None,
                          "leakage": None}}
