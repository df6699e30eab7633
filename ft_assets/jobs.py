"""Jobs: one per recipe in ``recipes/`` (its name in the UI's job list, its config in the launchpad), plus
``end_to_end`` (any recipe's run config fits it: ``ftops run path/to/recipe.yaml``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dagster import AssetKey, AssetSelection, define_asset_job

from ft_assets.recipes import RECIPES_DIR, Recipe, available_recipes, load_recipe, run_config
from resources.paths import default_drops_dir

if TYPE_CHECKING:
    from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

RAW = AssetKey("raw_records")
# Assets a recipe runs only when it has their section (a study is not rerun with every training).
OPTIONAL_ASSETS = {"hpo": "hpo_study"}
RECIPE_TAG = "ftops/recipe"


def recipe_selection(asset_names: set[str], recipe: Recipe | None = None) -> AssetSelection:
    """Everything downstream of ingestion; optional stages only when the recipe asks for them."""
    selection = AssetSelection.all() - AssetSelection.assets(RAW)
    for section, asset_name in OPTIONAL_ASSETS.items():
        if asset_name in asset_names and (recipe is None or section not in recipe.doc):
            selection = selection - AssetSelection.assets(asset_name)
    return selection


def recipe_job(recipe: Recipe, asset_names: set[str]) -> UnresolvedAssetJobDefinition:
    return define_asset_job(recipe.job_name, selection=recipe_selection(asset_names, recipe),
                            config=run_config(recipe, default_drops_dir(), asset_names),
                            description=f"recipe {recipe.path.name}: {recipe.description}",
                            tags={RECIPE_TAG: recipe.name})


def build_jobs(asset_names: set[str]) -> list[UnresolvedAssetJobDefinition]:
    """``end_to_end`` (ingested drops to registered model; any recipe's run config fits it) and one job per recipe."""
    end_to_end = define_asset_job("end_to_end", selection=recipe_selection(asset_names),
                                  description="ingested drops to registered model, with any recipe's run config")
    return [end_to_end] + [recipe_job(load_recipe(name), asset_names) for name in available_recipes(RECIPES_DIR)]
