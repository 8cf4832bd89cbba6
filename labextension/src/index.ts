import {
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { ICommandPalette, ToolbarButton } from '@jupyterlab/apputils';
import {
  INotebookTracker,
  Notebook,
  NotebookActions,
  NotebookPanel
} from '@jupyterlab/notebook';
import { Kernel } from '@jupyterlab/services';
import { IStatusBar } from '@jupyterlab/statusbar';
import { Signal } from '@lumino/signaling';
import { Widget } from '@lumino/widgets';

import { IVllamaStatus, NEW_CELL, mimeTypeFor, statusText } from './status';

const COMMANDS = {
  insert: 'vllama:insert-cell',
  stop: 'vllama:stop-generation',
  panel: 'vllama:show-panel'
};

/** The status-bar item: engine · model · state · tok/s of the active notebook's kernel. */
class StatusItem extends Widget {
  readonly changed = new Signal<this, void>(this);
  private _text = '';

  constructor() {
    super();
    this.addClass('vllama-status');
    this.node.title = 'vllama: the kernel engine';
  }

  get active(): boolean {
    return this._text !== '';
  }

  show_(status: IVllamaStatus | null): void {
    const text = statusText(status);
    if (text !== this._text) {
      this._text = text;
      this.node.textContent = text;
      this.node.dataset.state = status ? status.state : '';
      this.changed.emit();
    }
  }
}

/** One comm per kernel; opened again after executions until the kernel has the extension. */
class KernelLink {
  private _comms = new Map<string, Kernel.IComm>();
  private _status = new Map<string, IVllamaStatus>();

  constructor(private _item: StatusItem, private _tracker: INotebookTracker) {}

  refresh(): void {
    const kernel = this._kernel();
    this._item.show_(kernel ? this._status.get(kernel.id) ?? null : null);
  }

  ensure(): void {
    const kernel = this._kernel();
    if (!kernel || this._comms.has(kernel.id)) {
      this.refresh();
      return;
    }
    const id = kernel.id;
    const comm = kernel.createComm('vllama');
    this._comms.set(id, comm);
    comm.onMsg = msg => {
      this._status.set(id, msg.content.data as unknown as IVllamaStatus);
      this.refresh();
    };
    comm.onClose = () => {
      this._comms.delete(id);
      this._status.delete(id);
      this.refresh();
    };
    comm.open();
    this.refresh();
  }

  private _kernel(): Kernel.IKernelConnection | null {
    const panel = this._tracker.currentWidget;
    return panel?.sessionContext.session?.kernel ?? null;
  }
}

function highlight(notebook: Notebook): void {
  for (const cell of notebook.widgets) {
    if (cell.model.type !== 'code') {
      continue;
    }
    const wanted = mimeTypeFor(cell.model.sharedModel.getSource(), notebook.codeMimetype);
    if (cell.model.mimeType !== wanted) {
      cell.model.mimeType = wanted;
    }
  }
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'vllama-jupyter:plugin',
  description: 'Engine status in the status bar and %%vllama cell tools.',
  autoStart: true,
  requires: [INotebookTracker],
  optional: [IStatusBar, ICommandPalette],
  activate: (
    app: JupyterFrontEnd,
    tracker: INotebookTracker,
    statusBar: IStatusBar | null,
    palette: ICommandPalette | null
  ) => {
    const item = new StatusItem();
    const link = new KernelLink(item, tracker);
    if (statusBar) {
      statusBar.registerStatusItem('vllama-jupyter:status', {
        item,
        align: 'left',
        rank: 100,
        isActive: () => item.active,
        activeStateChanged: item.changed
      });
    }

    const current = (): NotebookPanel | null => tracker.currentWidget;
    app.commands.addCommand(COMMANDS.insert, {
      label: 'Insert %%vllama cell',
      caption: 'Insert a cell that prompts the kernel engine',
      execute: () => {
        const panel = current();
        if (!panel) {
          return;
        }
        NotebookActions.insertBelow(panel.content);
        panel.content.activeCell?.model.sharedModel.setSource(NEW_CELL);
        panel.content.mode = 'edit';
      }
    });
    app.commands.addCommand(COMMANDS.stop, {
      label: 'Stop generation',
      caption: 'Interrupt the kernel: the generation stops, its text stays',
      execute: async () => {
        await current()?.sessionContext.session?.kernel?.interrupt();
      }
    });
    app.commands.addCommand(COMMANDS.panel, {
      label: 'Show vllama panel',
      caption: 'Insert and run a cell showing the engine panel',
      execute: async () => {
        const panel = current();
        if (!panel) {
          return;
        }
        NotebookActions.insertBelow(panel.content);
        panel.content.activeCell?.model.sharedModel.setSource(
          '%load_ext vllama_jupyter\n%vllama panel'
        );
        await NotebookActions.run(panel.content, panel.sessionContext);
      }
    });
    for (const command of Object.values(COMMANDS)) {
      palette?.addItem({ command, category: 'vllama' });
    }

    tracker.widgetAdded.connect((_, panel) => {
      panel.toolbar.insertItem(
        10,
        'vllama-insert',
        new ToolbarButton({
          label: '%%vllama',
          tooltip: 'Insert %%vllama cell',
          onClick: () => void app.commands.execute(COMMANDS.insert)
        })
      );
      panel.toolbar.insertItem(
        11,
        'vllama-stop',
        new ToolbarButton({
          label: 'Stop generation',
          tooltip: 'Stop generation (interrupt the kernel)',
          onClick: () => void app.commands.execute(COMMANDS.stop)
        })
      );
      panel.content.modelContentChanged.connect(highlight);
      panel.content.activeCellChanged.connect(nb => highlight(nb));
      panel.sessionContext.kernelChanged.connect(() => link.ensure());
      panel.sessionContext.ready.then(() => {
        highlight(panel.content);
        link.ensure();
      });
    });
    tracker.currentChanged.connect(() => link.ensure());
    NotebookActions.executed.connect(() => link.ensure());
  }
};

export default plugin;
