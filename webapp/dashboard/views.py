"""Server-rendered dashboard pages. Views read through selectors, write through services, and show
``ApplicationError`` messages in the page; other teams' objects answer 404 (the selectors scope by user)."""

from __future__ import annotations

import json
import math
from functools import wraps

import modelcodecs
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.core.exceptions import PermissionDenied
from django.http import FileResponse, Http404, HttpResponse
from django.shortcuts import redirect, render
from django.templatetags.static import static
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_POST

from webapp.core.exceptions import ApplicationError
from webapp.core.paths import team_roots
from webapp.dashboard.charts import Point, SizeBar, ratio_quality_svg, size_bars_svg
from webapp.dashboard.forms import (ArtifactImportForm, DatasetPathForm, DatasetUploadForm, GradientCompressForm,
                                    GradientSetPathForm, InvitationForm, JobForm, JobSearchForm, MemberRoleForm,
                                    ModelPathForm, ModelUploadForm, PairCreateForm, TeamCreateForm)
from webapp.dashboard.selectors import api_token_get, current_team, model_perplexity, store_jobs_in_flight
from webapp.dashboard.services import api_token_create, api_token_revoke
from webapp.jobs.models import Job
from webapp.jobs.runners import job_restored_dir
from webapp.jobs.selectors import job_get, job_list, job_restored_expires_at
from webapp.jobs.services import job_cancel, job_delete, job_pin, job_retry, job_submit
from webapp.jobs.worker_selectors import job_queue_warning, worker_list_live_for_user, worker_queues_online
from webapp.registry.selectors import (artifact_get, artifact_list, dataset_get, dataset_list, gradient_set_get,
                                       gradient_set_list, gradient_set_rate_table, model_changes,
                                       model_delete_impact, model_get, model_list, model_stored_bytes,
                                       pair_comparison, pair_delete_impact, pair_get, pair_list)
from webapp.registry.storage_selectors import STORAGE_DEFINITIONS, model_storage, team_storage_breakdown
from webapp.registry.services import (artifact_delete, artifact_download_name, artifact_import, artifact_open,
                                      dataset_delete, dataset_register_from_path, dataset_upload,
                                      gradient_set_register_from_path, model_delete,
                                      model_register_from_path, model_register_upload, model_rescan,
                                      model_store_submit, pair_create, pair_delete)
from webapp.teams.selectors import (invitation_get_for_team, invitation_get_for_user, invitation_list_for_team,
                                    invitation_list_for_user, member_get, membership_list, membership_role,
                                    team_get_for_user, team_list_for_user, user_can_write,
                                    user_is_team_admin)
from webapp.teams.services import (invitation_accept, invitation_cancel, invitation_create, invitation_decline,
                                   membership_remove, membership_role_set, team_choose, team_create)

RECENT_JOBS = 100
JOBS_PER_PAGE = 50


def _render(request, template: str, context: dict | None = None, status: int = 200):
    ctx = {"teams": list(team_list_for_user(user=request.user)), "current_team": current_team(request),
           "invitation_count": invitation_list_for_user(user=request.user).count()}
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


@require_GET
def favicon(request):
    """Browsers ask for /favicon.ico whatever the page says: send them to the icon."""
    return redirect(static("dashboard/favicon.svg"), permanent=True)


@team_required
def home(request, team):
    return redirect("dashboard:pair_list")


@login_required
@require_POST
def team_switch(request):
    team = team_get_for_user(user=request.user, slug=request.POST.get("team", ""))
    team_choose(user=request.user, team=team)
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
            team_choose(user=request.user, team=team)
            messages.success(request, f"Team {team.name} created.")
            return redirect("dashboard:home")
    return _render(request, "dashboard/team_new.html", {"form": form})


@login_required
def team_list_view(request):
    """Your teams and roles, and the invitations waiting for your answer."""
    teams = [{"team": t, "role": membership_role(user=request.user, team=t)}
             for t in team_list_for_user(user=request.user)]
    return _render(request, "dashboard/team_list.html", {
        "rows": teams, "invitations": invitation_list_for_user(user=request.user),
    })


@login_required
def team_detail(request, slug: str):
    """A team's members and roles; its admins invite, change roles and remove members here."""
    team = team_get_for_user(user=request.user, slug=slug)
    is_admin = membership_role(user=request.user, team=team) == "admin"
    return _render(request, "dashboard/team_detail.html", {
        "team": team, "is_admin": is_admin,
        "members": [{"membership": m, "form": MemberRoleForm(initial={"role": m.role}, prefix=m.user.username)}
                    for m in membership_list(team=team)],
        "invitations": invitation_list_for_team(team=team) if is_admin else [],
        "invite_form": InvitationForm(),
    })


@login_required
@require_POST
def team_invite(request, slug: str):
    team = team_get_for_user(user=request.user, slug=slug)
    form = InvitationForm(request.POST)
    if form.is_valid():
        invitation = _service_call(request, invitation_create, team=team, by=request.user, **form.cleaned_data)
        if invitation is not None:
            messages.success(request, f"Invitation to {invitation.username!r} saved: they join when they accept.")
    else:
        messages.error(request, "Give a username and a role.")
    return redirect("dashboard:team_detail", team.slug)


@login_required
@require_POST
def team_member_role(request, slug: str, username: str):
    team = team_get_for_user(user=request.user, slug=slug)
    membership = member_get(team=team, username=username)
    form = MemberRoleForm(request.POST, prefix=username)
    if form.is_valid() and _service_call(request, membership_role_set, membership=membership, by=request.user,
                                         role=form.cleaned_data["role"]) is not None:
        messages.success(request, f"{username} is now {form.cleaned_data['role']}.")
    return redirect("dashboard:team_detail", team.slug)


@login_required
@require_POST
def team_member_remove(request, slug: str, username: str):
    team = team_get_for_user(user=request.user, slug=slug)
    membership = member_get(team=team, username=username)
    leaving = membership.user_id == request.user.pk
    try:
        membership_remove(team=team, user=membership.user, by=request.user)
    except (ApplicationError, PermissionDenied) as exc:
        messages.error(request, getattr(exc, "message", None) or str(exc))
        return redirect("dashboard:team_detail", team.slug)
    if leaving:
        messages.success(request, f"You left {team.name}.")
        return redirect("dashboard:team_list")
    messages.success(request, f"{username} was removed from {team.name}.")
    return redirect("dashboard:team_detail", team.slug)


@login_required
@require_POST
def team_invitation_cancel(request, slug: str, pk: int):
    team = team_get_for_user(user=request.user, slug=slug)
    invitation = invitation_get_for_team(team=team, id=pk)
    if _service_call(request, invitation_cancel, invitation=invitation, by=request.user) is not None:
        messages.success(request, f"Invitation to {invitation.username!r} withdrawn.")
    return redirect("dashboard:team_detail", team.slug)


@login_required
@require_POST
def invitation_answer(request, pk: int, answer: str):
    invitation = invitation_get_for_user(user=request.user, id=pk)
    if answer == "accept":
        if _service_call(request, invitation_accept, invitation=invitation, user=request.user) is not None:
            messages.success(request, f"You joined {invitation.team.name} as {invitation.role}. Switch to it in "
                                      "the header when you want to work in it.")
    elif _service_call(request, invitation_decline, invitation=invitation, user=request.user) is not None:
        messages.success(request, f"Invitation to {invitation.team.name} declined.")
    return redirect("dashboard:team_list")


# ---- models --------------------------------------------------------------------------------------------------
def _model_registered(request, model):
    """After a registration: the live page of its store job when the user asked to store it compressed, else the
    model's page."""
    messages.success(request, f"Model {model.name} registered.")
    job = store_jobs_in_flight(team=model.team).get(model.pk)
    if job is None:
        return redirect("dashboard:model_detail", model.pk)
    messages.success(request, f"Job #{job.pk} stores {model.name} compressed.")
    return redirect("dashboard:job_detail", job.pk)


@team_required
def model_list_view(request, team):
    path_form = ModelPathForm(prefix="path")
    upload_form = ModelUploadForm(prefix="upload")
    if request.method == "POST":
        if request.POST.get("source") == "upload":
            upload_form = ModelUploadForm(request.POST, request.FILES, prefix="upload")
            if upload_form.is_valid():
                model = _service_call(request, model_register_upload, team=team, user=request.user,
                                      **upload_form.cleaned_data)
                if model is not None:
                    return _model_registered(request, model)
        else:
            path_form = ModelPathForm(request.POST, prefix="path")
            if path_form.is_valid():
                model = _service_call(request, model_register_from_path, team=team, user=request.user,
                                      **path_form.cleaned_data)
                if model is not None:
                    return _model_registered(request, model)
    return _render(request, "dashboard/model_list.html", {
        "models": model_list(team=team), "path_form": path_form, "upload_form": upload_form,
        "roots": team_roots(team),
    })


@login_required
def model_detail(request, pk: int):
    model = model_get(id=pk, user=request.user)
    return _render(request, "dashboard/model_detail.html", {
        "model": model,
        "storage": model_storage(model=model),
        "stored": model_stored_bytes(model=model),
        "can_store": user_can_write(user=request.user, team=model.team),
        "store_job": store_jobs_in_flight(team=model.team).get(model.pk),
        "pairs": pair_list(team=model.team, filters={"model": model.pk}),
        "changes": model_changes(model=model),
        "can_delete": user_is_team_admin(user=request.user, team=model.team),
    })


@login_required
@require_POST
def model_rescan_view(request, pk: int):
    model = model_get(id=pk, user=request.user)
    if _service_call(request, model_rescan, model=model, user=request.user) is not None:
        messages.success(request, f"Model {model.name} rescanned: sizes, hashes and modification times updated.")
    return redirect("dashboard:model_detail", model.pk)


def _delete_page(request, *, obj, kind: str, impact: dict, delete, back: str, done: str):
    """GET: what the delete removes (pairs and artifacts with it) and a confirmation form; POST: delete."""
    if request.method == "POST":
        kwargs = {"with_artifacts": request.POST.get("with_artifacts") == "on"} if kind in ("model", "pair") else {}
        summary = _service_call(request, delete, **{kind: obj}, user=request.user, **kwargs)
        if summary is not None:
            freed = summary.get("bytes_freed", 0)
            messages.success(request, f"Deleted {kind} {obj}" + (f" ({freed:,} bytes freed)." if freed else "."))
            return redirect(done)
    return _render(request, "dashboard/confirm_delete.html", {
        "obj": obj, "kind": kind, "back": back, "pairs": [p for p in impact.get("pairs", []) if p != obj],
        "artifacts": impact.get("artifacts", []), "can_delete": user_is_team_admin(user=request.user, team=obj.team),
    })


@login_required
def model_delete_view(request, pk: int):
    model = model_get(id=pk, user=request.user)
    return _delete_page(request, obj=model, kind="model", impact=model_delete_impact(model=model),
                        delete=model_delete, back=reverse("dashboard:model_detail", args=[model.pk]),
                        done=reverse("dashboard:model_list"))


# ---- storage -------------------------------------------------------------------------------------------------
@team_required
def storage_view(request, team):
    """The team's storage: totals, what takes the space, what each codec saved, and every model with a "Store
    compressed" button (members and admins)."""
    breakdown = team_storage_breakdown(team=team)
    store_jobs = store_jobs_in_flight(team=team)
    return _render(request, "dashboard/storage.html", {
        "breakdown": breakdown,
        "models": [{**m, "store_job": store_jobs.get(m["id"])} for m in breakdown["models"]],
        "definitions": STORAGE_DEFINITIONS,
        "space_chart": size_bars_svg([SizeBar(c["label"], c["logical_bytes"], c["on_disk_bytes"])
                                      for c in breakdown["categories"]], title="what takes the space"),
        "codec_chart": size_bars_svg([SizeBar(c["label"], c["logical_bytes"], c["on_disk_bytes"])
                                      for c in breakdown["codecs"]], title="what each codec saved"),
        "can_store": user_can_write(user=request.user, team=team),
    })


@login_required
@require_POST
def model_store_view(request, pk: int):
    """Submit the job that stores the model compressed, then follow it live on its page."""
    model = model_get(id=pk, user=request.user)
    job = _service_call(request, model_store_submit, model=model, user=request.user)
    if job is None:
        return redirect("dashboard:storage")
    messages.success(request, f"Job #{job.pk} stores {model.name} compressed.")
    return redirect("dashboard:job_detail", job.pk)


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
            best[artifact.pair_id] = (artifact.ratio, artifact.codec_label)
    rows = [{"pair": p, "best": best.get(p.pk)} for p in pairs]
    return _render(request, "dashboard/pair_list.html", {"rows": rows, "form": form, "models": models})


def _tolerance(request) -> tuple[float, float]:
    """The user's tolerance from the query string (perplexity +pct %, accuracy -points), defaults 1 % / 0.5."""
    values = []
    for key, default in (("tolerance_pct", 1.0), ("tolerance_points", 0.5)):
        try:
            value = float(request.GET.get(key, default))
        except ValueError:
            value = default
        values.append(value if math.isfinite(value) and value >= 0 else default)
    return values[0], values[1]


@login_required
def pair_detail(request, pk: int):
    pair = pair_get(id=pk, user=request.user)
    tolerance_pct, tolerance_points = _tolerance(request)
    dataset = None
    if request.GET.get("dataset", "").isdigit():
        dataset = dataset_list(team=pair.team).filter(pk=int(request.GET["dataset"])).first()
    view = pair_comparison(pair=pair, dataset=dataset, tolerance_pct=tolerance_pct,
                           tolerance_points=tolerance_points)
    metric = view["metric"]
    points = [Point(f"{r['label']} #{r['artifact_id']}", r["codec"], r["score"], r["ratio"])
              for r in view["rows"] if r["score"] is not None]
    pareto = [p for p, r in zip(points, [r for r in view["rows"] if r["score"] is not None])
              if r["artifact_id"] in view["pareto"]]
    recommended = next((p for p, r in zip(points, [r for r in view["rows"] if r["score"] is not None])
                        if r["artifact_id"] == view["recommended"]), None)
    reference = (view["original"] or {}).get(metric) if metric else None
    direction = "higher" if view["higher_is_better"] else "lower"
    return _render(request, "dashboard/pair_detail.html", {
        "pair": pair,
        "view": view,
        "rows": view["rows"],
        "chart": ratio_quality_svg(points, reference_x=reference, pareto=pareto, highlight=recommended,
                                   x_label=f"{metric} ({direction} is better)") if metric else "",
        "unevaluated": sum(1 for r in view["rows"] if r["score"] is None),
        # the reference rows: the base's and the fine-tune's own perplexity (BitDelta compares Initial/distilled)
        "reference_perplexity": (view["original"] or {}).get("perplexity")
        if isinstance((view["original"] or {}).get("perplexity"), (int, float))
        else model_perplexity(team=pair.team, model_id=pair.finetuned_id),
        "base_perplexity": model_perplexity(team=pair.team, model_id=pair.base_id),
        "jobs": job_list(team=pair.team, filters={"pair": pair.pk})[:RECENT_JOBS],
        "report": pair.report or {},
        "can_delete": user_is_team_admin(user=request.user, team=pair.team),
        "import_form": ArtifactImportForm(),
    })


@login_required
def pair_delete_view(request, pk: int):
    pair = pair_get(id=pk, user=request.user)
    return _delete_page(request, obj=pair, kind="pair", impact=pair_delete_impact(pair=pair), delete=pair_delete,
                        back=reverse("dashboard:pair_detail", args=[pair.pk]), done=reverse("dashboard:pair_list"))


@login_required
@require_POST
def artifact_import_view(request, pk: int):
    pair = pair_get(id=pk, user=request.user)
    form = ArtifactImportForm(request.POST, request.FILES)
    if not form.is_valid():
        messages.error(request, "Choose an artifact file (.dvz) to import.")
    else:
        artifact = _service_call(request, artifact_import, team=pair.team, user=request.user, pair=pair,
                                 file=form.cleaned_data["file"])
        if artifact is not None:
            messages.success(request, f"Artifact #{artifact.pk} imported: it restores {pair.finetuned.name} exactly."
                             if artifact.verification == "verified" else f"Artifact #{artifact.pk} imported.")
    return redirect("dashboard:pair_detail", pair.pk)


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
        "can_delete": user_is_team_admin(user=request.user, team=team), "roots": team_roots(team),
    })


@login_required
def dataset_delete_view(request, pk: int):
    dataset = dataset_get(id=pk, user=request.user)
    return _delete_page(request, obj=dataset, kind="dataset", impact={}, delete=dataset_delete,
                        back=reverse("dashboard:dataset_list"), done=reverse("dashboard:dataset_list"))


# ---- jobs ----------------------------------------------------------------------------------------------------
@team_required
def job_list_view(request, team):
    form = JobSearchForm(
        request.GET or None, statuses=Job.Status.choices, kinds=Job.Kind.choices,
        codecs=[c.codec_id for c in modelcodecs.list_codecs()], pairs=pair_list(team=team),
        models=model_list(team=team), usernames=[m.user.get_username() for m in membership_list(team=team)])
    filters = form.filters() if form.is_bound and form.is_valid() else {}
    page = Paginator(job_list(team=team, filters=filters), JOBS_PER_PAGE).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    return _render(request, "dashboard/job_list.html", {
        "jobs": page.object_list, "page": page, "form": form, "filtered": bool(filters), "query": query.urlencode(),
    })


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
    identical_id = (job.metrics or {}).get("identical_artifact_id")
    identical = artifact_list(team=job.team).filter(pk=identical_id).first() if identical_id else None
    return _render(request, "dashboard/job_detail.html", {
        "job": job,
        "queue_warning": job_queue_warning(job=job),
        "artifact": artifact,
        "identical": identical,
        "restored_expires_at": job_restored_expires_at(job),
        "restored_exists": job.kind == Job.Kind.DECOMPRESS and job_restored_dir(job).is_dir(),
        "can_delete": user_is_team_admin(user=request.user, team=job.team),
        "final_statuses": sorted(Job.TERMINAL),
        "codec_config_json": json.dumps(job.codec_config, sort_keys=True),
    })


@login_required
@require_POST
def job_delete_view(request, pk: int):
    job = job_get(id=pk, user=request.user)
    if _service_call(request, job_delete, job=job, user=request.user) is not None:
        messages.success(request, f"Job #{pk} deleted.")
        return redirect("dashboard:job_list")
    return redirect("dashboard:job_detail", pk)


@login_required
@require_POST
def job_pin_view(request, pk: int):
    job = job_get(id=pk, user=request.user)
    pinned = request.POST.get("pinned") == "1"
    if _service_call(request, job_pin, job=job, user=request.user, pinned=pinned) is not None:
        messages.success(request, "Restored copy pinned: it is kept." if pinned else
                         "Restored copy unpinned: it expires like the others.")
    return redirect("dashboard:job_detail", pk)


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


@login_required
def artifact_delete_view(request, pk: int):
    artifact = artifact_get(id=pk, user=request.user)
    back = reverse("dashboard:pair_detail", args=[artifact.pair_id]) if artifact.pair_id else reverse("dashboard:home")
    return _delete_page(request, obj=artifact, kind="artifact", impact={}, delete=artifact_delete, back=back,
                        done=back)


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


# ---- gradient sets -------------------------------------------------------------------------------------------
@team_required
def gradient_set_list_view(request, team):
    form = GradientSetPathForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        entry = _service_call(request, gradient_set_register_from_path, team=team, user=request.user,
                              **form.cleaned_data)
        if entry is not None:
            messages.success(request, f"Gradient set {entry.name} registered.")
            return redirect("dashboard:gradient_set_detail", entry.pk)
    return _render(request, "dashboard/gradient_set_list.html", {
        "gradient_sets": gradient_set_list(team=team), "form": form, "roots": team_roots(team),
    })


@login_required
def gradient_set_detail(request, pk: int):
    entry = gradient_set_get(id=pk, user=request.user)
    form = GradientCompressForm(request.POST or None, models=model_list(team=entry.team))
    if request.method == "POST" and form.is_valid():
        job = _service_call(request, job_submit, team=entry.team, user=request.user, kind=Job.Kind.COMPRESS,
                            gradient_set=entry, codec_config=form.codec_config(), model=form.cleaned_data["prior"])
        if job is not None:
            return redirect("dashboard:job_detail", job.pk)
    return _render(request, "dashboard/gradient_set_detail.html", {
        "gradient_set": entry, "rates": gradient_set_rate_table(gradient_set=entry), "form": form,
        "jobs": job_list(team=entry.team).filter(gradient_set=entry)[:RECENT_JOBS],
    })
