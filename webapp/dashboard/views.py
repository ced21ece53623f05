"""Server-rendered dashboard pages. Views read through selectors, write through services, and show
``ApplicationError`` messages in the page; other teams' objects answer 404 (the selectors scope by user)."""

from __future__ import annotations

import json
from functools import wraps

import modelcodecs
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import FileResponse, Http404, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_POST

from webapp.core.exceptions import ApplicationError
from webapp.dashboard.charts import Point, ratio_quality_svg
from webapp.dashboard.forms import (DatasetPathForm, DatasetUploadForm, JobForm, ModelPathForm, ModelUploadForm,
                                    PairCreateForm, TeamCreateForm)
from webapp.dashboard.selectors import (SESSION_TEAM_KEY, api_token_get, current_team, model_perplexity,
                                        pair_comparison)
from webapp.dashboard.services import api_token_create, api_token_revoke
from webapp.jobs.models import Job
from webapp.jobs.selectors import job_get, job_list
from webapp.jobs.services import job_cancel, job_retry, job_submit
from webapp.jobs.worker_selectors import job_queue_warning, worker_list_live_for_user, worker_queues_online
from webapp.registry.selectors import (artifact_get, artifact_list, dataset_list, model_get, model_list,
                                       pair_get, pair_list)
from webapp.registry.services import (artifact_download_name, artifact_open, dataset_register_from_path,
                                      dataset_upload, model_register_from_path, model_register_upload,
                                      pair_create)
from webapp.teams.selectors import team_get_for_user, team_list_for_user
from webapp.teams.services import team_create

RECENT_JOBS = 100


def _render(request, template: str, context: dict | None = None, status: int = 200):
    ctx = {"teams": list(team_list_for_user(user=request.user)), "current_team": current_team(request)}
    ctx.update(context or {})
    return render(request, template, ctx, status=status)


def team_required(view):
    """Login required, and a current team (users without one are sent to the team page)."""

    @login_required
    @wraps(view)
    def wrapper(request, *args, **kwargs):
        team = current_team(request)
        if team is None:
            return redirect("dashboard:team_new")
        return view(request, team, *args, **kwargs)

    return wrapper


def _service_call(request, fn, **kwargs):
    """Run a service; an ApplicationError or PermissionDenied becomes a message on the page (returns None)."""
    try:
        return fn(**kwargs)
    except ApplicationError as exc:
        messages.error(request, exc.message)
    except PermissionDenied as exc:
        messages.error(request, str(exc) or "You may not do that.")
    return None


# ---- health, home, teams -------------------------------------------------------------------------------------
@require_GET
def healthz(request):
    return HttpResponse("ok", content_type="text/plain")


@team_required
def home(request, team):
    return redirect("dashboard:pair_list")


@login_required
@require_POST
def team_switch(request):
    team = team_get_for_user(user=request.user, slug=request.POST.get("team", ""))
    request.session[SESSION_TEAM_KEY] = team.slug
    target = request.POST.get("next") or reverse("dashboard:home")
    if not url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}):
        target = reverse("dashboard:home")
    # Object pages belong to one team: go to the list instead of a page that would now be another team's.
    return redirect(target if target.rstrip("/").split("/")[-1].isalpha() or target == "/" else "dashboard:home")


@login_required
def team_new(request):
    form = TeamCreateForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        team = _service_call(request, team_create, name=form.cleaned_data["name"], owner=request.user)
        if team is not None:
            request.session[SESSION_TEAM_KEY] = team.slug
            messages.success(request, f"Team {team.name} created.")
            return redirect("dashboard:home")
    return _render(request, "dashboard/team_new.html", {"form": form})


# ---- models --------------------------------------------------------------------------------------------------
@team_required
def model_list_view(request, team):
    path_form = ModelPathForm(prefix="path")
    upload_form = ModelUploadForm(prefix="upload")
    if request.method == "POST":
        if request.POST.get("source") == "upload":
            upload_form = ModelUploadForm(request.POST, request.FILES, prefix="upload")
            if upload_form.is_valid():
                model = _service_call(request, model_register_upload, team=team, user=request.user,
                                      name=upload_form.cleaned_data["name"], files=upload_form.cleaned_data["files"])
                if model is not None:
                    messages.success(request, f"Model {model.name} registered.")
                    return redirect("dashboard:model_detail", model.pk)
        else:
            path_form = ModelPathForm(request.POST, prefix="path")
            if path_form.is_valid():
                model = _service_call(request, model_register_from_path, team=team, user=request.user,
                                      **path_form.cleaned_data)
                if model is not None:
                    messages.success(request, f"Model {model.name} registered.")
                    return redirect("dashboard:model_detail", model.pk)
    return _render(request, "dashboard/model_list.html", {
        "models": model_list(team=team), "path_form": path_form, "upload_form": upload_form,
    })


@login_required
def model_detail(request, pk: int):
    model = model_get(id=pk, user=request.user)
    return _render(request, "dashboard/model_detail.html", {
        "model": model,
        "pairs": pair_list(team=model.team).filter(base=model) | pair_list(team=model.team).filter(finetuned=model),
    })


# ---- pairs ---------------------------------------------------------------------------------------------------
@team_required
def pair_list_view(request, team):
    models = model_list(team=team)
    form = PairCreateForm(request.POST or None, models=models)
    if request.method == "POST" and form.is_valid():
        pair = _service_call(request, pair_create, team=team, user=request.user, **form.cleaned_data)
        if pair is not None:
            messages.success(request, f"Pair {pair.name} created.")
            return redirect("dashboard:pair_detail", pair.pk)
    pairs = list(pair_list(team=team))
    best = {}
    for artifact in artifact_list(team=team):
        if artifact.pair_id and artifact.ratio > best.get(artifact.pair_id, (0, ""))[0]:
            best[artifact.pair_id] = (artifact.ratio, artifact.codec_id)
    rows = [{"pair": p, "best": best.get(p.pk)} for p in pairs]
    return _render(request, "dashboard/pair_list.html", {"rows": rows, "form": form, "models": models})


@login_required
def pair_detail(request, pk: int):
    pair = pair_get(id=pk, user=request.user)
    rows = pair_comparison(pair=pair)
    points = [Point(r["label"], r["codec"], r["perplexity"], r["ratio"]) for r in rows if r["perplexity"] is not None]
    reference = model_perplexity(team=pair.team, model_id=pair.finetuned_id)
    return _render(request, "dashboard/pair_detail.html", {
        "pair": pair,
        "rows": rows,
        "chart": ratio_quality_svg(points, reference_x=reference),
        "unevaluated": sum(1 for r in rows if r["perplexity"] is None),
        "reference_perplexity": reference,
        "base_perplexity": model_perplexity(team=pair.team, model_id=pair.base_id),
        "jobs": job_list(team=pair.team, filters={"pair": pair.pk})[:RECENT_JOBS],
        "report": pair.report or {},
    })


# ---- datasets ------------------------------------------------------------------------------------------------
@team_required
def dataset_list_view(request, team):
    path_form = DatasetPathForm(prefix="path")
    upload_form = DatasetUploadForm(prefix="upload")
    if request.method == "POST":
        if request.POST.get("source") == "upload":
            upload_form = DatasetUploadForm(request.POST, request.FILES, prefix="upload")
            if upload_form.is_valid():
                dataset = _service_call(request, dataset_upload, team=team, user=request.user,
                                        **upload_form.cleaned_data)
                if dataset is not None:
                    messages.success(request, f"Dataset {dataset.name} registered.")
                    return redirect("dashboard:dataset_list")
        else:
            path_form = DatasetPathForm(request.POST, prefix="path")
            if path_form.is_valid():
                dataset = _service_call(request, dataset_register_from_path, team=team, user=request.user,
                                        **path_form.cleaned_data)
                if dataset is not None:
                    messages.success(request, f"Dataset {dataset.name} registered.")
                    return redirect("dashboard:dataset_list")
    return _render(request, "dashboard/dataset_list.html", {
        "datasets": dataset_list(team=team), "path_form": path_form, "upload_form": upload_form,
    })


# ---- jobs ----------------------------------------------------------------------------------------------------
@team_required
def job_list_view(request, team):
    return _render(request, "dashboard/job_list.html", {"jobs": job_list(team=team)[:RECENT_JOBS]})


@team_required
def job_new(request, team):
    initial = {}
    for key in ("kind", "pair", "artifact", "model", "dataset", "codec"):
        if request.GET.get(key):
            initial[key] = request.GET[key]
    form = JobForm(request.POST or None, initial=initial, codecs=modelcodecs.list_codecs(),
                   pairs=pair_list(team=team), artifacts=artifact_list(team=team), models=model_list(team=team),
                   datasets=dataset_list(team=team), queues_online=worker_queues_online())
    if request.method == "POST" and form.is_valid():
        job = _service_call(request, job_submit, team=team, user=request.user, **form.service_kwargs())
        if job is not None:
            messages.success(request, f"Job #{job.pk} queued on {job.queue}.")
            warning = job_queue_warning(job=job)
            if warning:
                messages.warning(request, warning)
            return redirect("dashboard:job_detail", job.pk)
    return _render(request, "dashboard/job_form.html", {"form": form})


@login_required
def job_detail(request, pk: int):
    job = job_get(id=pk, user=request.user)
    artifact = getattr(job, "output_artifact", None) if job.kind == Job.Kind.COMPRESS else None
    return _render(request, "dashboard/job_detail.html", {
        "job": job,
        "queue_warning": job_queue_warning(job=job),
        "artifact": artifact,
        "final_statuses": sorted(Job.TERMINAL),
        "codec_config_json": json.dumps(job.codec_config, sort_keys=True),
    })


@login_required
@require_POST
def job_cancel_view(request, pk: int):
    job = job_get(id=pk, user=request.user)
    if _service_call(request, job_cancel, job=job, user=request.user) is not None:
        messages.success(request, f"Cancellation of job #{job.pk} requested.")
    return redirect("dashboard:job_detail", job.pk)


@login_required
@require_POST
def job_retry_view(request, pk: int):
    job = job_get(id=pk, user=request.user)
    new = _service_call(request, job_retry, job=job, user=request.user)
    if new is not None:
        messages.success(request, f"Job #{new.pk} queued (retry of #{job.pk}).")
        return redirect("dashboard:job_detail", new.pk)
    return redirect("dashboard:job_detail", job.pk)


# ---- workers -------------------------------------------------------------------------------------------------
@login_required
def worker_list_view(request):
    return _render(request, "dashboard/workers.html", {"workers": worker_list_live_for_user(user=request.user),
                                                       "timeout": round(settings.DELTAVAULT_WORKER_TIMEOUT)})


# ---- artifacts -----------------------------------------------------------------------------------------------
@login_required
@require_GET
def artifact_download(request, pk: int):
    artifact = artifact_get(id=pk, user=request.user)
    try:
        handle = artifact_open(artifact=artifact)
    except ApplicationError as exc:
        raise Http404(exc.message) from exc
    return FileResponse(handle, as_attachment=True, filename=artifact_download_name(artifact),
                        content_type="application/octet-stream")


# ---- API tokens ----------------------------------------------------------------------------------------------
@login_required
def tokens(request):
    if request.method == "POST":
        if request.POST.get("action") == "revoke":
            if api_token_revoke(user=request.user):
                messages.success(request, "Token revoked.")
        else:
            api_token_create(user=request.user)
            messages.success(request, "New token created. Keep it secret.")
        return redirect("dashboard:tokens")
    return _render(request, "dashboard/tokens.html", {"token": api_token_get(user=request.user)})
